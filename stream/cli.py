"""The `framestream` command. Each subcommand lives in its own module under `stream.commands`."""

from __future__ import annotations

import typer

from stream.commands import classify, dead, models, run, stage

__all__ = ["app", "main"]

app = typer.Typer(
    name="framestream",
    help="Classify video frames at high throughput over Redis Streams, OpenVINO and Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models.app, name="models")
app.add_typer(dead.app, name="dead")
app.command("classify")(classify.classify)
app.command("stage")(stage.stage)
app.command("run")(run.run)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
