#!/bin/sh
# slurm.conf: Epilog=/etc/slurm/gpushare-epilog.sh (gpushare-job-policy.sh beside it does the work).
exec "$(dirname "$0")/gpushare-job-policy.sh" epilog
