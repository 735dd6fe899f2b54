"""The models that lived here moved to ``jobs`` (batch, annotation, datasets,
fine-tuning) and ``chat`` (curated question/answer pairs): forget them here, state
only — the apps that now own them took the tables over."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('inference', '0002_finetune'),
        ('jobs', '0001_initial'),
        ('chat', '0005_qapair_from_inference'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name='dataset', name='dataset_name_version'),
                migrations.DeleteModel(name='Annotation'),
                migrations.DeleteModel(name='FineTuneJob'),
                migrations.DeleteModel(name='Dataset'),
                migrations.DeleteModel(name='QAPair'),
                migrations.DeleteModel(name='BatchLine'),
                migrations.DeleteModel(name='BatchJob'),
                migrations.DeleteModel(name='BatchFile'),
            ],
        ),
    ]
