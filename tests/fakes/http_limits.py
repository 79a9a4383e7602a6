"""A FakeAPI that enforces a call limit per fixed window and says so in its headers (tests/test_http.py).

Windows are aligned on the epoch (window n covers [n * window, (n + 1) * window) of time.time()).
A call beyond the limit is answered 429 (and counted in `refused`); accepted calls are counted per
window in `accepted`. `style` picks the headers each answer carries:

- "exact": Exact Online's X-RateLimit-Minutely-Limit/Remaining/Reset (reset in epoch milliseconds)
  next to a daily X-RateLimit-Limit/Remaining/Reset (`daily` calls a day, reset at midnight UTC);
- "ietf": RateLimit-Limit/Remaining/Reset, the reset in whole seconds from now (rounded up);
- "combined": one `RateLimit: limit=.., remaining=.., reset=..` header;
- "none": no headers (the caller must know the limit).
"""

from __future__ import annotations

import math
import time
from collections import Counter

from tests.fakes.base import FakeAPI, Request, Response


class LimitedAPI(FakeAPI):
    def __init__(self, limit: int, window: float, style: str = "exact", *, daily: int = 5000, retry_after: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        assert style in ("exact", "ietf", "combined", "none")
        self.limit, self.window, self.style = limit, window, style
        self.daily_left = daily
        self.retry_after = retry_after
        self.accepted: Counter[int] = Counter()  # window number -> calls accepted in it
        self.refused = 0
        self.route("GET", r"/items/(?P<n>\d+)")(lambda req, n: Response.json({"n": int(n)}))

    def _dispatch(self, req: Request) -> Response:
        now = time.time()
        n = int(now // self.window)
        with self.lock:
            ok = self.accepted[n] < self.limit and self.daily_left > 0
            if ok:
                self.accepted[n] += 1
                self.daily_left -= 1
            else:
                self.refused += 1
            remaining = self.limit - self.accepted[n]
            daily_left = self.daily_left
        reset = (n + 1) * self.window
        headers = self._headers(remaining, reset, now, daily_left)
        if not ok:
            if self.retry_after:
                headers["Retry-After"] = str(math.ceil(reset - now))
            return Response.text("rate limit exceeded", 429, headers)
        response = super()._dispatch(req)
        response.headers.update(headers)
        return response

    def _headers(self, remaining: int, reset: float, now: float, daily_left: int) -> dict[str, str]:
        if self.style == "exact":
            midnight = (math.floor(now / 86400) + 1) * 86400
            return {
                "X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": str(daily_left), "X-RateLimit-Reset": str(midnight * 1000),
                "X-RateLimit-Minutely-Limit": str(self.limit), "X-RateLimit-Minutely-Remaining": str(remaining),
                "X-RateLimit-Minutely-Reset": str(int(reset * 1000)),
            }
        delta = str(max(1, math.ceil(reset - now)))
        if self.style == "ietf":
            return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(remaining), "RateLimit-Reset": delta}
        if self.style == "combined":
            return {"RateLimit": f"limit={self.limit}, remaining={remaining}, reset={delta}"}
        return {}
