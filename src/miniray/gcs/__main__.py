from miniray.gcs.supervisor import main

main()
