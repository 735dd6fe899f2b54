"""Curated question/answer pairs move here from ``inference`` (where their table was
made): state only, and the content type with them (permissions kept)."""

import django.core.validators
import django.utils.timezone
import pgvector.django.vector
from django.db import migrations, models


def move_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="inference", model="qapair").update(app_label="chat")


def restore_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="chat", model="qapair").update(app_label="inference")


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0004_user_language'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('inference', '0002_finetune'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='QAPair',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('question', models.TextField(verbose_name='question')),
                        ('answer', models.TextField(verbose_name='answer')),
                        ('embedding', pgvector.django.vector.VectorField(dimensions=384, editable=False, null=True, verbose_name='question embedding')),
                        ('threshold', models.FloatField(default=0.85, help_text='Least cosine similarity of a question to be answered with this.', validators=[django.core.validators.MinValueValidator(0.0), django.core.validators.MaxValueValidator(1.0)], verbose_name='similarity threshold')),
                        ('enabled', models.BooleanField(default=True, verbose_name='enabled')),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now, verbose_name='created')),
                        ('updated_at', models.DateTimeField(auto_now=True, verbose_name='updated')),
                    ],
                    options={
                        'db_table': 'inference_qapair',
                        'verbose_name': 'question/answer pair',
                        'verbose_name_plural': 'question/answer pairs',
                        'ordering': ['question'],
                    },
                ),
                    ],
        ),
        migrations.RunPython(move_content_type, restore_content_type),
    ]
