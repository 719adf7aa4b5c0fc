"""`python -m pipelines.curate --input IN --output OUT [...]`: the curation job, same flags as `hdvg curate`.
Runs on a new local Ray cluster, or on the cluster named by --address / RAY_ADDRESS (as under
`ray job submit`)."""
import sys

from hdvg.cli import main

if __name__ == "__main__":
    sys.exit(main(["curate", *sys.argv[1:]]))
