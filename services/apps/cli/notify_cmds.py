"""``maas notify``: notification topics, webhook subscriptions and the delivery log."""
from __future__ import annotations

import typer

from services.apps.cli.common import client, command, confirm_delete
from services.apps.cli.output import JsonOption, console, emit, status_text, table, when

app = typer.Typer(help="Notifications: topics, webhook subscriptions, deliveries.", no_args_is_help=True)


@command(app)
def topics(as_json: bool = JsonOption) -> None:
    """List notification topics."""
    with client() as c:
        data = c.get("/api/v1/notification-topics")
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "name", "description", "subscriptions", "created"],
        [(x["id"], x["name"], x["description"], x["subscription_count"], when(x["created_at"])) for x in d["items"]],
        title="Topics"))


@command(app, "create-topic")
def create_topic(name: str = typer.Argument(...), description: str = typer.Option("", "--description"),
                 as_json: bool = JsonOption) -> None:
    """Create a topic."""
    with client() as c:
        data = c.post("/api/v1/notification-topics", {"name": name, "description": description})
    emit(data, as_json=as_json, render=lambda d: console.print(f"created topic [bold]{d['name']}[/bold]"))


@command(app, "delete-topic")
def delete_topic(topic: str = typer.Argument(..., help="topic id or name"),
                 yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete a topic and its subscriptions."""
    confirm_delete(f"topic '{topic}'", yes=yes)
    with client() as c:
        c.delete(f"/api/v1/notification-topics/{topic}")
    console.print(f"deleted topic {topic}")


@command(app)
def subscribe(topic: str = typer.Argument(..., help="topic id or name"),
              endpoint: str = typer.Argument(..., help="http(s) URL receiving signed POST requests"),
              description: str = typer.Option("", "--description"),
              format: str = typer.Option("standard-webhooks", "--format",
                                         help="standard-webhooks, or cloudevents (CloudEvents HTTP, structured)"),
              as_json: bool = JsonOption) -> None:
    """Subscribe a webhook to a topic (it must confirm before it receives notifications)."""
    with client() as c:
        data = c.post(f"/api/v1/notification-topics/{topic}/subscriptions",
                      {"protocol": "webhook", "endpoint": endpoint, "description": description, "format": format})
    emit(data, as_json=as_json, render=lambda d: (
        console.print(f"subscription {d['id']} is {status_text(d['status'])}: the endpoint received a confirmation request"),
        console.print(f"signing secret (shown once): [bold]{d['secret']}[/bold]", highlight=False) if d.get("secret") else None))


@command(app)
def subscriptions(topic: str = typer.Option(None, "--topic"), as_json: bool = JsonOption) -> None:
    """List subscriptions."""
    with client() as c:
        data = c.get("/api/v1/notification-subscriptions", topic=topic)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "topic", "endpoint", "status", "created"],
        [(s["id"], s["topic_name"], s["endpoint"], status_text(s["status"]), when(s["created_at"])) for s in d["items"]],
        title="Subscriptions"))


@command(app)
def unsubscribe(subscription_id: str = typer.Argument(...), yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete a subscription."""
    confirm_delete(f"subscription {subscription_id}", yes=yes)
    with client() as c:
        c.delete(f"/api/v1/notification-subscriptions/{subscription_id}")
    console.print(f"deleted subscription {subscription_id}")


@command(app)
def deliveries(status: str = typer.Option(None), as_json: bool = JsonOption) -> None:
    """The delivery log, newest first."""
    with client() as c:
        data = c.get("/api/v1/notification-deliveries", status=status, limit=100)
    emit(data, as_json=as_json, render=lambda d: table(
        ["time", "topic", "event", "subject", "status", "attempts", "error"],
        [(when(x["created_at"]), x["topic_name"], x.get("event_type") or x["kind"], x.get("subject"),
          status_text(x["status"]), x["attempts"], x.get("last_error")) for x in d["items"]], title="Deliveries"))


@command(app)
def rules(subject: str = typer.Option(None, "--subject"), as_json: bool = JsonOption) -> None:
    """Which events of which jobs go to which topic."""
    with client() as c:
        data = c.get("/api/v1/notification-rules", subject=subject)
    emit(data, as_json=as_json, render=lambda d: table(
        ["id", "topic", "subject", "events", "source", "created"],
        [(r["id"], r["topic_name"], r["subject"], ", ".join(r["events"]), r["source"], when(r["created_at"]))
         for r in d["items"]], title="Rules"))


@command(app, "add-rule")
def add_rule(topic: str = typer.Argument(..., help="topic name"),
             subject: str = typer.Option("*", "--subject", help="'*', 'tuning-jobs/*' or 'tuning-jobs/<id>'"),
             events: str = typer.Option("completed,failed", "--events", help="comma-separated event kinds"),
             as_json: bool = JsonOption) -> None:
    """Send chosen event kinds of some jobs to a topic."""
    with client() as c:
        data = c.post("/api/v1/notification-rules", {"topic_name": topic, "subject": subject,
                                                     "events": [e.strip() for e in events.split(",") if e.strip()]})
    emit(data, as_json=as_json, render=lambda r: console.print(f"rule {r['id']}: {r['subject']} → {r['topic_name']}",
                                                              highlight=False, markup=False))


@command(app, "delete-rule")
def delete_rule(rule_id: str = typer.Argument(...)) -> None:
    """Delete a rule."""
    with client() as c:
        c.delete(f"/api/v1/notification-rules/{rule_id}")
    console.print(f"deleted rule {rule_id}")
