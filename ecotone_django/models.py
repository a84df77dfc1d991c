"""ecotone_django's tables. Every tenant database holds a full set (see TenantRouter.allow_migrate)."""

from __future__ import annotations

import json
from typing import Any

from django.db import models


class OutboxMessage(models.Model):
    """A message waiting in a tenant database.

    For a database channel this row *is* the queue entry: a worker claims it
    with ``SELECT … FOR UPDATE SKIP LOCKED``, handles it and deletes it in one
    transaction. For a broker channel it is the outbox entry: written in the
    sender's transaction, published after commit (or by the relay), then deleted.
    ``available_at`` holds delays and retry backoff: nothing waits in a broker.
    """

    message_id = models.CharField(max_length=36)
    channel = models.CharField(max_length=150)
    handler = models.CharField(max_length=255)
    message_type = models.CharField(max_length=255)
    tenant = models.CharField(max_length=150, blank=True, default="")
    body = models.TextField()
    available_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "ecotone_outbox"
        verbose_name = "pending message"
        indexes = [models.Index(fields=["channel", "available_at", "id"], name="ecotone_outbox_due")]

    def __str__(self) -> str:
        return f"{self.message_type} → {self.handler} ({self.channel})"


class InboxEntry(models.Model):
    """Proof that ``handler`` handled the message (or business key) ``key``; committed with its effects."""

    key = models.CharField(max_length=255)
    handler = models.CharField(max_length=255)
    handled_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "ecotone_inbox"
        verbose_name_plural = "inbox entries"
        constraints = [models.UniqueConstraint(fields=["key", "handler"], name="ecotone_inbox_once")]

    def __str__(self) -> str:
        return f"{self.handler} handled {self.key}"


class DeadLetter(models.Model):
    """A message that could not be handled, with the reason. ``deadletter replay`` sends it again."""

    message_id = models.CharField(max_length=100, blank=True, default="")
    message_type = models.CharField(max_length=255, blank=True, default="")
    handler = models.CharField(max_length=255, blank=True, default="")
    channel = models.CharField(max_length=150, blank=True, default="")
    tenant = models.CharField(max_length=150, blank=True, default="")
    reason = models.CharField(max_length=255)
    exception_type = models.CharField(max_length=255, blank=True, default="")
    exception_message = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    body = models.TextField(help_text="The envelope as received (JSON, or the raw text that failed to decode).")
    attempts = models.PositiveIntegerField(default=0)
    failed_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "ecotone_dead_letter"
        ordering = ["-failed_at", "-id"]
        permissions = [("replay_deadletter", "Can replay dead letter")]

    def __str__(self) -> str:
        return f"{self.message_type or 'undecodable message'}: {self.reason}"

    @property
    def envelope_pretty(self) -> str:
        try:
            return json.dumps(json.loads(self.body), indent=2, sort_keys=True, ensure_ascii=False)
        except ValueError:
            return self.body


class SagaState(models.Model):
    """A saga instance: its state as JSON, guarded by an optimistic ``version``."""

    ACTIVE, COMPLETED = "active", "completed"
    STATUS_CHOICES = [(ACTIVE, "active"), (COMPLETED, "completed")]

    saga_type = models.CharField(max_length=255)
    saga_id = models.CharField(max_length=255)
    tenant = models.CharField(max_length=150, blank=True, default="")
    state = models.JSONField(default=dict)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=ACTIVE)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "ecotone_saga"
        verbose_name = "saga"
        constraints = [models.UniqueConstraint(fields=["saga_type", "saga_id"], name="ecotone_saga_identity")]
        indexes = [models.Index(fields=["status", "saga_type"], name="ecotone_saga_status")]

    def __str__(self) -> str:
        return f"{self.saga_type} {self.saga_id}"

    @property
    def state_pretty(self) -> str:
        value: Any = self.state
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


class SagaHistory(models.Model):
    """One message a saga handled."""

    saga = models.ForeignKey(SagaState, on_delete=models.CASCADE, related_name="history")
    message_id = models.CharField(max_length=36)
    message_type = models.CharField(max_length=255)
    handler = models.CharField(max_length=255)
    handled_at = models.DateTimeField()

    class Meta:
        db_table = "ecotone_saga_history"
        ordering = ["handled_at", "id"]
        verbose_name_plural = "saga history"


class TaskRun(models.Model):
    """The result of a ``django.tasks`` task enqueued through :class:`~ecotone_django.task_backends.OutboxBackend`.

    Written in the tenant's database: inserted with the task's outbox row, updated in the transaction that
    handles it (so a task's effects and its result commit together). ``errors`` holds one
    ``{"exception_class_path", "traceback"}`` per failed attempt; ``worker_ids`` one entry per attempt.
    """

    READY, RUNNING, FAILED, SUCCESSFUL = "READY", "RUNNING", "FAILED", "SUCCESSFUL"
    STATUS_CHOICES = [(s, s.capitalize()) for s in (READY, RUNNING, FAILED, SUCCESSFUL)]

    id = models.CharField(max_length=36, primary_key=True)
    task_path = models.CharField(max_length=255)
    backend = models.CharField(max_length=100)
    queue_name = models.CharField(max_length=150)
    priority = models.IntegerField(default=0)
    tenant = models.CharField(max_length=150, blank=True, default="")
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=READY)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    return_value = models.JSONField(null=True, blank=True)
    errors = models.JSONField(default=list)
    worker_ids = models.JSONField(default=list)
    enqueued_at = models.DateTimeField()
    run_after = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "ecotone_task_result"
        verbose_name = "task result"
        ordering = ["-enqueued_at", "-id"]
        indexes = [models.Index(fields=["status", "finished_at"], name="ecotone_task_finished")]

    def __str__(self) -> str:
        return f"{self.task_path} {self.id} ({self.status})"

    @property
    def attempts(self) -> int:
        return len(self.worker_ids)
