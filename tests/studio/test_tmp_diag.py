import time
from tests.studio.test_studio import *  # noqa
def test_diag(page):
    times = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: times.append((time.perf_counter(), str(payload)[:60]))))
    page.reload(); page.wait_for_selector("#prompt")
    page.select_option("#model", "loopback")
    page.fill("#prompt", "hello studio from chromium today")
    page.keyboard.press("Enter")
    counts = token_counts_while_streaming(page)
    t0 = times[0][0]
    for t, p in times: print(round((t-t0)*1000), p)
    print(counts)
