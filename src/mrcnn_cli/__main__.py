from mrcnn_cli.cli import main

if __name__ == '__main__':   # not when a spawned worker (the bench's torchvision peer) imports it
    main()
