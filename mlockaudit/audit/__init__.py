"""Everything audit: record parsing, event assembly, rules, netlink, the live source."""
