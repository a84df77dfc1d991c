"""The transport contract: one test class every channel backend subclasses (see ``channel_contract``)."""
