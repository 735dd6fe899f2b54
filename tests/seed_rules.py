"""The seed's routing rules, as the tests know them: the example fixture
(``fixtures/60_seed_rules_example.json``, loaded disabled by ``openclaw up``), enabled,
with the example mark dropped from their names."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management import call_command

from routing import rules
from routing.models import RoutingRule

SEED_FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "60_seed_rules_example.json"
MARK = " (seed example)"


def load_seed_rules(*, hybrid: bool = True) -> None:
    """Load and enable the seed's rules (and the hybrid "Sensitive data stays local" rule
    unless ``hybrid`` is False)."""
    call_command("loaddata", str(SEED_FIXTURE), verbosity=0)
    for row in json.loads(SEED_FIXTURE.read_text()):
        rule = RoutingRule.objects.get(pk=row["pk"])
        if not hybrid and rule.condition.get("field") == "flag":
            rule.delete()
            continue
        rule.name = rule.name_en = rule.name.removesuffix(MARK)
        rule.name_zh_hans = (rule.name_zh_hans or "").removesuffix("（示例）")
        rule.enabled = True
        rule.save()
    rules.clear_local_copy()
