"""API vocabulary: phases, reasons, wire shapes and naming rules."""
