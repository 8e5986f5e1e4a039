"""`python -m vislab.sandbox zygote FD`: the fork server (vislab.sandbox.worker)."""
import sys

from vislab.sandbox.worker import main

main(sys.argv[1:])
