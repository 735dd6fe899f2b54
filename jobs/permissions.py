"""Who may use the jobs' studio pages and API: staff holding the Django model
permissions of the objects a view reads or changes, as the admin asks of the same
objects — ``is_staff`` alone opens nothing. Exporting other people's conversations
into a dataset (or reading one, or annotating their replies) also needs
``chat.view_message_content``, the permission that guards their decrypted content.

Everyone signed in keeps what is their own: annotating the replies of their own
conversations and listing their own annotations (``jobs.annotation``)."""

from __future__ import annotations

from django.utils.translation import gettext as _

READ_CONTENT = "chat.view_message_content"
VIEW_BATCHES = "jobs.view_batchjob"
CHANGE_BATCHES = "jobs.change_batchjob"  # cancel, retry
VIEW_ANNOTATIONS = "jobs.view_annotation"  # everyone's, not only one's own
ADD_ANNOTATIONS = "jobs.add_annotation"  # on other people's replies
VIEW_DATASETS = "jobs.view_dataset"
ADD_DATASETS = "jobs.add_dataset"
VIEW_FINETUNES = "jobs.view_finetunejob"
ADD_FINETUNES = "jobs.add_finetunejob"
CHANGE_FINETUNES = "jobs.change_finetunejob"  # cancel


def staff_with(user, *perms: str) -> bool:
    """An active member of the staff holding every one of ``perms``."""
    return bool(user and user.is_active and user.is_staff and user.has_perms(perms))


def refusal(user, perms: tuple[str, ...]) -> str | None:
    """Why ``user`` may not do what needs ``perms`` (a message for a 403), or None."""
    if not (user.is_active and user.is_staff):
        return _("Only staff may do this.")
    missing = [perm for perm in perms if not user.has_perm(perm)]
    if missing:
        return _("You need the “%(permission)s” permission.") % {"permission": missing[0]}
    return None


def may_see_jobs(user) -> bool:
    """The studio's Jobs page lists batch jobs, fine-tuning jobs, or both."""
    return staff_with(user, VIEW_BATCHES) or staff_with(user, VIEW_FINETUNES)
