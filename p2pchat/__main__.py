from p2pchat.cli.main import main

main()
