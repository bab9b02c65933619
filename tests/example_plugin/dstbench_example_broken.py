"""A plugin whose import fails: dstbench must report it once and carry on."""

raise ImportError("this example plugin is broken on purpose")
