from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JobsConfig(AppConfig):
    """Long jobs on Celery: batch jobs, annotation and datasets, LoRA fine-tuning."""

    name = "jobs"
    verbose_name = _("Jobs and training data")
