"""Admin-defined workflows: typed nodes (``registry``, ``nodes``) and edges stored as
JSON on ``chat.models.Workflow``, validated on save (``validation``) and compiled to
LangGraph ``StateGraph``s on first use (``compiler``); runs of one conversation
coordinated across processes (``runs``), time travel (``history``) and cron schedules
(``schedule``)."""
