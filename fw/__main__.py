from fw.cli import main

main()
