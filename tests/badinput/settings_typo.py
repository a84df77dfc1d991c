"""The test settings with one typo in ``ECOTONE`` (``RETRYS``): every management command must refuse to start."""

from tests.settings import *  # noqa: F403
from tests.settings import ECOTONE

ECOTONE = {**ECOTONE, "RETRYS": ECOTONE["RETRY"]}
