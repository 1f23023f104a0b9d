from mrcnn_cli.commands.cli import main

if __name__ == '__main__':   # not when a spawned worker (the bench's torchvision peer) imports it
    main()
