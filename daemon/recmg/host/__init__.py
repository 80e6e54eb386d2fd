"""The host as recmgd sees it: NUMA topology, memory tiers and the one parser of
/proc and /sys files (meminfo, node distances, PSI).  Imports nothing of recmg's
above it."""
