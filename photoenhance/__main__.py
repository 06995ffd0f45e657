from photoenhance.cli import main

main()
