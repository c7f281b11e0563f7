"""``ai-models``: the user's side of the module from a workstation (docs/upload.md, "Command line")."""
