#!/bin/sh
# slurm.conf: Prolog=/etc/slurm/gpushare-prolog.sh (gpushare-job-policy.sh beside it does the work).
exec "$(dirname "$0")/gpushare-job-policy.sh" prolog
