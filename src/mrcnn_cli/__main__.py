from mrcnn_cli.cli import main

main()
