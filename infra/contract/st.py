"""schemathesis's command line, with one CPython 3.11.7 bug stepped around.

Hypothesis names each filtered strategy by parsing its lambda's source file with `ast.parse`; on
CPython 3.11.7 (this machine's Python) a large file parsed deep in the stack can raise
`SystemError: AST constructor recursion depth mismatch` (fixed in 3.11.8). The name is only for
display, so a failed parse names the lambda `<unknown>` instead of ending the run.
"""

import sys

import hypothesis.internal.lambda_sources as lambda_sources

_describe = lambda_sources._lambda_description


def _describe_or_unknown(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _describe_or_unknown

from schemathesis.cli import schemathesis  # noqa: E402

if __name__ == "__main__":
    sys.exit(schemathesis())
