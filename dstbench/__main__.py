from dstbench.cli import main

main()
