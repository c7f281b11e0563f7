"""The worker image's entry points (``python -m jobs <command>``): thin CLIs
over ``lib``. Each command writes its result JSON and exits 0 only on success.
"""
