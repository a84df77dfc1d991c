from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("ecotone_django", "0001_initial"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="deadletter",
            options={"ordering": ["-failed_at", "-id"], "permissions": [("replay_deadletter", "Can replay dead letter")]},
        ),
    ]
