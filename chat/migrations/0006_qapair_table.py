"""The curated pairs' table takes this app's name (``inference_qapair`` → ``chat_qapair``),
once ``inference`` has let go of it."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0005_qapair_from_inference'),
        ('inference', '0003_models_moved_out'),
    ]

    operations = [
        migrations.AlterModelTable(name='qapair', table=None),
    ]
