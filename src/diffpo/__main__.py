"""``python -m diffpo``: the command line (diffpo.cli)."""
from diffpo.cli import main

main()
