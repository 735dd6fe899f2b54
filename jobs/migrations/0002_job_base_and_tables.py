"""Batch jobs get the ``Job`` base's heartbeat and cancel request (fine-tuning jobs had
them), and the tables take this app's name (``inference_*`` → ``jobs_*``) once
``inference`` has let go of them."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('jobs', '0001_initial'),
        ('inference', '0003_models_moved_out'),
    ]

    operations = [
        migrations.AddField(
            model_name='batchjob',
            name='cancel_requested',
            field=models.BooleanField(default=False, verbose_name='cancel requested'),
        ),
        migrations.AddField(
            model_name='batchjob',
            name='heartbeat_at',
            field=models.DateTimeField(blank=True, editable=False, null=True, verbose_name='last progress'),
        ),
        migrations.AlterModelTable(name='annotation', table=None),
        migrations.AlterModelTable(name='batchfile', table=None),
        migrations.AlterModelTable(name='batchjob', table=None),
        migrations.AlterModelTable(name='batchline', table=None),
        migrations.AlterModelTable(name='dataset', table=None),
        migrations.AlterModelTable(name='finetunejob', table=None),
    ]
