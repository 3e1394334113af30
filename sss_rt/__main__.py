from sss_rt.cli import main

main()
