from diffpo.cli import main

main()
