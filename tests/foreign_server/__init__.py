"""A second session server, written in another style, for proving the harness on a server it did not ship.

Independent of ``reference_impl`` (nothing imported or copied from it): an
aiohttp.web application built from CONTEXT.md alone, with its own names
(``accumulated_token_ids``), no request-id echo, no ``/stats``, no stored
messages in the GET body and text logs through Python ``logging``. Run it as::

    python -m tests.foreign_server --host 127.0.0.1 --port P --backend-url URL --tokenizer DIR [--bug NAME]

``--bug`` selects a known-bad version (``commit_aborted``, ``auto_create``,
``malformed_500``) that the harness must flag.
"""

from tests.foreign_server.app import BUGS, Config, Server, create_app
from tests.foreign_server.tokens import Tokens

__all__ = ["BUGS", "Config", "Server", "Tokens", "create_app"]
