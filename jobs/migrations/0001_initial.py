"""The batch, annotation, dataset and fine-tuning models move here from ``inference``
(where their tables were made): state only — the tables stay as they are — and the
content types move with them, so permissions and admin history are kept."""

import django.core.validators  # noqa: F401
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import core.fields
import jobs.models

MOVED = ["batchfile", "batchjob", "batchline", "dataset", "finetunejob", "annotation"]


def move_content_types(apps, schema_editor):
    """Existing installs: relabel the content types, keeping their ids (and so every
    permission and admin log entry that points at them)."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="inference", model__in=MOVED).update(app_label="jobs")


def restore_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="jobs", model__in=MOVED).update(app_label="inference")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('chat', '0002_conversations_memory'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('inference', '0002_finetune'),
        ('routing', '0007_usage_audit'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='BatchFile',
                    fields=[
                        ('id', models.CharField(default=jobs.models.new_file_id, editable=False, max_length=40, primary_key=True, serialize=False)),
                        ('purpose', models.CharField(choices=[('batch', 'batch input'), ('batch_output', 'batch output')], max_length=20, verbose_name='purpose')),
                        ('filename', models.CharField(max_length=255, verbose_name='file name')),
                        ('content', models.BinaryField(verbose_name='content')),
                        ('bytes', models.PositiveBigIntegerField(default=0, verbose_name='size (bytes)')),
                        ('owner', models.CharField(blank=True, db_index=True, max_length=16, verbose_name='owner key')),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now, verbose_name='created')),
                    ],
                    options={
                        'db_table': 'inference_batchfile',
                        'verbose_name': 'batch file',
                        'verbose_name_plural': 'batch files',
                        'ordering': ['-created_at'],
                    },
                ),
                        migrations.CreateModel(
                    name='BatchJob',
                    fields=[
                        ('id', models.CharField(default=jobs.models.new_batch_id, editable=False, max_length=40, primary_key=True, serialize=False)),
                        ('status', models.CharField(choices=[('validating', 'validating'), ('failed', 'failed'), ('in_progress', 'in progress'), ('finalizing', 'finalizing'), ('completed', 'completed'), ('expired', 'expired'), ('cancelling', 'cancelling'), ('cancelled', 'cancelled')], db_index=True, default='validating', max_length=16, verbose_name='status')),
                        ('endpoint', models.CharField(default='/v1/chat/completions', max_length=64, verbose_name='endpoint')),
                        ('model', models.CharField(blank=True, help_text='When set, every line is sent to this model (its own “model” is replaced).', max_length=200, verbose_name='model')),
                        ('completion_window', models.CharField(default='24h', max_length=8, verbose_name='completion window')),
                        ('owner', models.CharField(blank=True, db_index=True, max_length=16, verbose_name='owner key')),
                        ('metadata', models.JSONField(blank=True, default=dict, verbose_name='metadata')),
                        ('validation_errors', models.JSONField(blank=True, default=list, verbose_name='invalid lines')),
                        ('error', models.TextField(blank=True, verbose_name='error')),
                        ('chunk_size', models.PositiveIntegerField(default=100, verbose_name='lines per chunk')),
                        ('total', models.PositiveIntegerField(default=0, verbose_name='lines')),
                        ('done', models.PositiveIntegerField(default=0, verbose_name='succeeded')),
                        ('failed', models.PositiveIntegerField(default=0, verbose_name='failed')),
                        ('progress_base', models.PositiveIntegerField(default=0, editable=False)),
                        ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now, verbose_name='created')),
                        ('in_progress_at', models.DateTimeField(blank=True, null=True)),
                        ('finalizing_at', models.DateTimeField(blank=True, null=True)),
                        ('completed_at', models.DateTimeField(blank=True, null=True)),
                        ('failed_at', models.DateTimeField(blank=True, null=True)),
                        ('cancelling_at', models.DateTimeField(blank=True, null=True)),
                        ('cancelled_at', models.DateTimeField(blank=True, null=True)),
                        ('api_key', models.ForeignKey(blank=True, help_text='Whose scope and limits the lines respect.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='routing.apikey', verbose_name='API key')),
                        ('error_file', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='jobs.batchfile', verbose_name='error file')),
                        ('input_file', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='jobs.batchfile', verbose_name='input file')),
                        ('output_file', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='jobs.batchfile', verbose_name='output file')),
                    ],
                    options={
                        'db_table': 'inference_batchjob',
                        'verbose_name': 'batch job',
                        'verbose_name_plural': 'batch jobs',
                        'ordering': ['-created_at'],
                    },
                ),
                        migrations.CreateModel(
                    name='BatchLine',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('line', models.PositiveIntegerField(verbose_name='line')),
                        ('chunk', models.PositiveIntegerField(verbose_name='chunk')),
                        ('custom_id', models.CharField(max_length=512, verbose_name='custom id')),
                        ('body', models.JSONField(verbose_name='request body')),
                        ('status', models.CharField(choices=[('pending', 'pending'), ('succeeded', 'succeeded'), ('failed', 'failed'), ('cancelled', 'cancelled')], default='pending', max_length=10, verbose_name='status')),
                        ('status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                        ('response', models.JSONField(blank=True, null=True, verbose_name='response body')),
                        ('request_id', models.CharField(blank=True, max_length=64)),
                        ('attempts', models.PositiveSmallIntegerField(default=0)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('job', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='lines', to='jobs.batchjob')),
                    ],
                    options={
                        'db_table': 'inference_batchline',
                        'verbose_name': 'batch line',
                        'verbose_name_plural': 'batch lines',
                        'ordering': ['job', 'line'],
                        'indexes': [models.Index(fields=['job', 'chunk', 'status'], name='batch_line_chunk'), models.Index(fields=['job', 'status'], name='batch_line_status')],
                        'constraints': [models.UniqueConstraint(fields=('job', 'line'), name='batch_line_unique')],
                    },
                ),
                        migrations.CreateModel(
                    name='Dataset',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(db_index=True, max_length=100, verbose_name='name')),
                        ('version', models.PositiveIntegerField(default=1, verbose_name='version')),
                        ('filters', models.JSONField(blank=True, default=dict, verbose_name='filters')),
                        ('include_flagged', models.BooleanField(default=False, help_text='Keep conversations with personal data or secrets (off: left out).', verbose_name='include flagged content')),
                        ('line_count', models.PositiveIntegerField(default=0, verbose_name='lines')),
                        ('excluded_count', models.PositiveIntegerField(default=0, verbose_name='conversations left out')),
                        ('content', models.BinaryField(verbose_name='content')),
                        ('sha256', models.CharField(max_length=64, verbose_name='content hash (SHA-256)')),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now, verbose_name='created')),
                        ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL, verbose_name='created by')),
                    ],
                    options={
                        'db_table': 'inference_dataset',
                        'verbose_name': 'dataset',
                        'verbose_name_plural': 'datasets',
                        'ordering': ['name', '-version'],
                    },
                ),
                        migrations.CreateModel(
                    name='FineTuneJob',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('suffix', models.CharField(blank=True, help_text='The new model is named BASE-ft-SUFFIX (or BASE-ft-JOB ID).', max_length=40, verbose_name='name suffix')),
                        ('lora_rank', models.PositiveSmallIntegerField(default=8, verbose_name='LoRA rank')),
                        ('lora_alpha', models.PositiveSmallIntegerField(default=16, verbose_name='LoRA alpha')),
                        ('learning_rate', models.FloatField(default=0.0002, verbose_name='learning rate')),
                        ('epochs', models.PositiveSmallIntegerField(default=3, verbose_name='epochs')),
                        ('max_steps', models.PositiveIntegerField(default=0, help_text='0: as many as the epochs take.', verbose_name='max steps')),
                        ('queue', models.CharField(choices=[('cpu', 'CPU workers (queue cpu)'), ('gpu', 'GPU workers (queue gpu)')], default='cpu', max_length=8, verbose_name='queue')),
                        ('status', models.CharField(choices=[('queued', 'queued'), ('running', 'running'), ('succeeded', 'succeeded'), ('failed', 'failed'), ('cancelled', 'cancelled')], db_index=True, default='queued', max_length=12, verbose_name='status')),
                        ('total_steps', models.PositiveIntegerField(default=0, verbose_name='steps')),
                        ('step', models.PositiveIntegerField(default=0, verbose_name='step')),
                        ('losses', models.JSONField(blank=True, default=list, verbose_name='training loss')),
                        ('output_path', models.CharField(blank=True, max_length=500, verbose_name='output folder')),
                        ('error', models.TextField(blank=True, verbose_name='error')),
                        ('celery_task_id', models.CharField(blank=True, max_length=64, verbose_name='task id')),
                        ('cancel_requested', models.BooleanField(default=False, verbose_name='cancel requested')),
                        ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now, verbose_name='created')),
                        ('started_at', models.DateTimeField(blank=True, null=True, verbose_name='started')),
                        ('heartbeat_at', models.DateTimeField(blank=True, editable=False, null=True, verbose_name='last progress')),
                        ('finished_at', models.DateTimeField(blank=True, null=True, verbose_name='finished')),
                        ('base_endpoint', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='routing.modelendpoint', verbose_name='base model')),
                        ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL, verbose_name='created by')),
                        ('dataset', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='finetune_jobs', to='jobs.dataset', verbose_name='dataset')),
                        ('result_endpoint', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='routing.modelendpoint', verbose_name='result model')),
                    ],
                    options={
                        'db_table': 'inference_finetunejob',
                        'verbose_name': 'fine-tuning job',
                        'verbose_name_plural': 'fine-tuning jobs',
                        'ordering': ['-created_at'],
                    },
                ),
                        migrations.CreateModel(
                    name='Annotation',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('rating', models.CharField(choices=[('up', 'thumbs up'), ('down', 'thumbs down'), ('none', 'no rating')], db_index=True, default='none', max_length=8, verbose_name='rating')),
                        ('corrected_content', core.fields.EncryptedTextField(blank=True, help_text='Replaces the reply in exported datasets; empty keeps the original.', verbose_name='corrected reply')),
                        ('tags', models.JSONField(blank=True, default=list, verbose_name='tags')),
                        ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now, verbose_name='created')),
                        ('updated_at', models.DateTimeField(auto_now=True, verbose_name='updated')),
                        ('annotator', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='annotations', to=settings.AUTH_USER_MODEL, verbose_name='annotator')),
                        ('message', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='annotations', to='chat.message', verbose_name='message')),
                    ],
                    options={
                        'db_table': 'inference_annotation',
                        'verbose_name': 'annotation',
                        'verbose_name_plural': 'annotations',
                        'ordering': ['-updated_at'],
                        'constraints': [models.UniqueConstraint(fields=('message', 'annotator'), name='annotation_one_per_annotator')],
                    },
                ),
                        migrations.AddConstraint(
                    model_name='dataset',
                    constraint=models.UniqueConstraint(fields=('name', 'version'), name='dataset_name_version'),
                ),
            ],
        ),
        migrations.RunPython(move_content_types, restore_content_types),
    ]
