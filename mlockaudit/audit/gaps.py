"""Audit loss that the kernel's ``lost`` counter does not see: records a multicast reader
or auditd's log never delivered, counted from gaps in the serial numbers."""


class SerialGaps(object):
    """Counts audit events that never arrived, from gaps in the serial numbers.

    Serials are handed out per event, in order, but records of different CPUs may arrive
    a little out of order; a serial missing from the last ``window`` serials may still
    come, so it only counts once it has fallen out of the window."""

    def __init__(self, window=4096):
        self.window = window
        self.highest = None
        self.missing = set()
        self.lost = 0

    def see(self, serial):
        highest = self.highest
        if highest is None or serial == highest + 1:
            self.highest = serial
        elif serial > highest:
            start = highest + 1
            if serial - start > self.window:
                self.lost += serial - start - self.window
                start = serial - self.window
            self.missing.update(range(start, serial))
            self.highest = serial
            if len(self.missing) > 4 * self.window:
                self.settle()
        elif serial != highest and self.missing:
            self.missing.discard(serial)

    def settle(self, final=False):
        """Count the missing serials that can no longer arrive (all of them if final)."""
        if not self.missing:
            return
        limit = self.highest - (0 if final else self.window)
        gone = [serial for serial in self.missing if serial <= limit]
        self.lost += len(gone)
        self.missing.difference_update(gone)
