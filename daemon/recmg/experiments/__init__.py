"""What shows recmg against others, on top of everything: the head-to-head bench
against the kernel's tiering and DAMON (``recmg bench tiering``), the page-placement
demo and ``recmg demo``.  Nothing below imports it."""
