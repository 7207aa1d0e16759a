"""What a command handler gets: its parsed arguments' environment and an API client."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from broker.cli.client import ApiClient, CliError, resolve_connection
from broker.cli.output import print_fields, print_json, print_table


@dataclass
class Runtime:
    args: argparse.Namespace
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _client: ApiClient | None = None

    @property
    def api(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(
                resolve_connection(
                    url=self.args.url,
                    token=self.args.token,
                    ca_cert=self.args.ca_cert,
                    data_dir=self.args.data_dir,
                    env=self.env,
                )
            )
        return self._client

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def show_list(self, data: object, columns: list[str]) -> None:
        if self.json:
            print_json(data)
            return
        if not isinstance(data, list):
            raise CliError("the broker sent an unexpected answer")
        print_table([d for d in data if isinstance(d, dict)], columns)

    def show_one(self, data: object, fields: list[str] | None = None) -> None:
        if self.json:
            print_json(data)
            return
        if not isinstance(data, dict):
            raise CliError("the broker sent an unexpected answer")
        print_fields(data, fields)

    def read_stdin_secret(self) -> str:
        value = sys.stdin.readline().rstrip("\n")
        if not value:
            raise CliError("nothing was given on standard input")
        return value


Handler = Callable[[Runtime], int]
SubParsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def read_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(65_536)
    except OSError as exc:
        raise CliError(f"cannot read {what} {path} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise CliError(f"{what} {path} is not text") from None
