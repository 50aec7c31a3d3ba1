"""A recording fake of pyusb's `usb.core` / `usb.util` for the Python BlinkStick CLI.

`cargo xtask parity` writes this file as `usb/core.py` (with `usb/__init__.py` and
`usb/util.py` importing from it) into a folder put first on PYTHONPATH, so the real
`blinkstick` package (PyPI 1.2.0) talks to it instead of libusb.

Environment:
  FAKE_BLINKSTICK      variant:serial[,variant:serial...] (as BLINKSTICK_EMULATE)
  FAKE_BLINKSTICK_DIR  where each stick's state is kept between invocations
  FAKE_BLINKSTICK_LOG  every control transfer is appended here as
                       `<unix ns> set <hex>` (report id from wValue, then the data after
                       its first byte) or `<unix ns> get <report id hex>`

The model answers GET_REPORT like the Rust emulator's firmware: LED colours, the
frame buffer (GRB), info blocks, mode (v3 sticks start in mode 2) and the Flex LED
count (32); reports a variant does not declare stall (USBError).
"""

import atexit
import fcntl
import json
import os
import time

# variant: (bcdDevice, product string, LEDs, channels, report ids)
_V3 = [1, 2, 3, 4, 5, 6, 7, 8, 9]
VARIANTS = {
    "blinkstick": (0x0200, "BlinkStick", 1, 1, [1, 2, 3]),
    "pro": (0x0200, "BlinkStick Pro", 64, 3, _V3),
    "square": (0x0200, "BlinkStick", 8, 1, _V3),
    "strip": (0x0201, "BlinkStick Strip", 8, 1, _V3),
    "nano": (0x0202, "BlinkStick Nano", 2, 1, _V3),
    "flex": (0x0203, "BlinkStick Flex", 32, 1, _V3 + [0x81]),
}
LENGTHS = {1: 4, 2: 33, 3: 33, 4: 2, 5: 6, 6: 26, 7: 50, 8: 98, 9: 194, 0x81: 2}


class USBError(IOError):
    pass


class NoBackendError(ValueError):
    pass


_LOG = []


def _log(kind, data):
    # in memory, written at exit: file I/O per transfer would slow Python's frames
    _LOG.append("%d %s %s\n" % (time.time_ns(), kind, bytes(data).hex()))


@atexit.register
def _flush():
    path = os.environ.get("FAKE_BLINKSTICK_LOG")
    if path and _LOG:
        with open(path, "a") as f:
            f.writelines(_LOG)
    for st in _STATES.values():
        st.save()


class FakeDevice(object):
    def __init__(self, variant, serial):
        self.variant = variant
        self.serial = serial
        self.bcdDevice, self.product, self.leds, self.channels, self.reports = VARIANTS[variant]
        self.idVendor = 0x20A0
        self.idProduct = 0x41E5

    # --- pyusb API used by blinkstick -------------------------------------------------
    def is_kernel_driver_active(self, interface):
        return False

    def detach_kernel_driver(self, interface):
        pass

    def ctrl_transfer(self, bmRequestType, bRequest, wValue, wIndex=0, data_or_wLength=None, timeout=None):
        report_id = wValue & 0xFF
        if bmRequestType == 0x20:
            data = bytes(bytearray(data_or_wLength))
            report = bytes([report_id]) + data[1:]
            _log("set", report)
            if report_id not in self.reports:
                raise USBError("[Errno 32] Pipe error")
            with self._state() as st:
                self._set(st, report)
            return len(data)
        if bmRequestType == 0xA0:
            _log("get", [report_id])
            if report_id not in self.reports or report_id == 5:
                raise USBError("[Errno 32] Pipe error")
            with self._state() as st:
                r = self._get(st, report_id)
            return bytearray(r[: int(data_or_wLength)])
        raise USBError("unexpected request type %#x" % bmRequestType)

    # --- the firmware model ---------------------------------------------------------
    def _state(self):
        if self.serial not in _STATES:
            _STATES[self.serial] = _State(self)
        return _STATES[self.serial]

    def _set_one(self, st, ch, i, rgb):
        st["leds"][ch][i] = list(rgb)
        st["buffer"][3 * i : 3 * i + 3] = [rgb[1], rgb[0], rgb[2]]

    def _set(self, st, d):
        rid = d[0]
        d = list(d) + [0] * max(0, LENGTHS[rid] - len(d))
        frames_ignored = self.variant == "pro" and st["mode"] != 2
        if rid == 1:
            if st["mode"] == 3 and self.variant != "blinkstick":
                for i in range(self.leds):
                    self._set_one(st, 0, i, d[1:4])
            else:
                self._set_one(st, 0, 0, d[1:4])
        elif rid in (2, 3):
            st["info"][rid - 2] = d[1:33]
        elif rid == 4:
            st["mode"] = d[1]
        elif rid == 5:
            if frames_ignored:
                return
            ch = d[1] if self.channels > 1 else 0
            if ch < 3 and d[2] < self.leds:
                self._set_one(st, ch, d[2], d[3:6])
        elif 6 <= rid <= 9:
            if frames_ignored or (self.channels == 1 and d[1] != 0) or d[1] > 2:
                return
            n = (LENGTHS[rid] - 2) // 3
            st["buffer"][: n * 3] = d[2 : 2 + n * 3]
            for i in range(min(n, self.leds)):
                g = st["buffer"][3 * i : 3 * i + 3]
                st["leds"][d[1]][i] = [g[1], g[0], g[2]]
        elif rid == 0x81:
            st["led_count"] = d[1]

    def _get(self, st, rid):
        r = [0] * LENGTHS[rid]
        r[0] = rid
        if rid == 1:
            r[1:4] = st["leds"][0][0]
        elif rid in (2, 3):
            r[1:33] = st["info"][rid - 2]
        elif rid == 4:
            r[1] = st["mode"]
        elif 6 <= rid <= 9:
            r[2:] = st["buffer"][: LENGTHS[rid] - 2]
        elif rid == 0x81:
            r[1] = st["led_count"]
        return r


_STATES = {}


class _State(object):
    """The stick's state: loaded (under its lock, held until exit) on first use, saved
    at exit."""

    def __init__(self, dev):
        d = os.environ["FAKE_BLINKSTICK_DIR"]
        self.path = os.path.join(d, dev.serial + ".json")
        self.lock = open(os.path.join(d, dev.serial + ".lock"), "a")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.st = json.load(f)
        else:
            v3 = dev.variant in ("square", "strip", "nano", "flex")
            self.st = {
                "mode": 2 if v3 else 0,
                "buffer": [0] * 192,
                "leds": [[[0, 0, 0] for _ in range(64)] for _ in range(3)],
                "info": [[0] * 32, [0] * 32],
                "led_count": 32 if dev.variant == "flex" else 0,
            }

    def __enter__(self):
        return self.st

    def __exit__(self, *exc):
        return False

    def save(self):
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.st, f)
        os.rename(self.path + ".tmp", self.path)
        self.lock.close()


def _devices():
    out = []
    for item in os.environ.get("FAKE_BLINKSTICK", "").split(","):
        item = item.strip()
        if item:
            v, s = item.split(":", 1)
            out.append(FakeDevice(v, s))
    return out


def find(find_all=False, backend=None, custom_match=None, **args):
    devs = [
        d
        for d in _devices()
        if all(getattr(d, k) == v for k, v in args.items())
    ]
    if find_all:
        return devs
    return devs[0] if devs else None


# --- usb.util ----------------------------------------------------------------------
def get_string(dev, index, langid=None):
    return {1: "Agile Innovative Ltd", 2: dev.product, 3: dev.serial}.get(index)
