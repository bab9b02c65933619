"""dstbench's built-in plugins, loaded through the `dstbench` entry-point group like any third-party plugin."""
