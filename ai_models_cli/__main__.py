"""``python -m ai_models_cli``: the same as the installed ``ai-models`` command."""

import sys

from ai_models_cli.cli import main

sys.exit(main())
