from lape_eval.cli import main

main()
