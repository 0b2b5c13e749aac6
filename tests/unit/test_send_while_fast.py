"""How a batch of webhooks (``services/webhook_batch.send``) goes out: one by one from the batch's thread to a
server that answers at once, in parallel threads to one that makes each request wait
(``delivery/httpcommon.send_while_fast``). FCM pushes go out many at once from one thread instead
(``tests/unit/test_push_connections.py``)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from smartsvc.delivery.httpcommon import FAST_ANSWER_S
from smartsvc.services.webhook_batch import SEND_CONCURRENCY, Claim, send
from smartsvc.timeutil import utcnow
from smartsvc.webhooks.transport import SendOutcome
from tests.support.factories import make_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OK = SendOutcome(ok=True, status_code=200, latency_ms=0, error=None, retry_after_s=None, gone=False)


class Endpoint:
    """A stand-in sender: answers after ``delay(n)`` seconds for its ``n``-th request, and records where each
    request was sent from and how many were in flight at once."""

    def __init__(self, delay) -> None:
        self.delay = delay
        self.threads: list[int] = []
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()

    def __call__(self, *_request, **_options) -> SendOutcome:
        with self.lock:
            n = len(self.threads)
            self.threads.append(threading.get_ident())
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.delay(n))
        with self.lock:
            self.in_flight -= 1
        return OK


def claims(count: int) -> list[Claim]:
    webhook_id = uuid.uuid4()
    return [Claim(uuid.uuid4(), uuid.uuid4(), webhook_id, "https://hooks.example/in", b'{"n": %d}' % n, [SECRET])
            for n in range(count)]


def run(tmp_path: Path, endpoint: Endpoint, count: int = 40) -> None:
    sent, unsent = send(claims(count), make_settings(tmp_path), utcnow, sender=endpoint)
    assert (len(sent), unsent) == (count, [])
    assert all(outcome.ok for _claim, outcome in sent)


def test_an_endpoint_answering_at_once_gets_the_batch_one_by_one_from_the_batch_thread(tmp_path):
    endpoint = Endpoint(lambda n: 0)
    run(tmp_path, endpoint)
    assert set(endpoint.threads) == {threading.get_ident()}
    assert endpoint.most_in_flight == 1


def test_an_endpoint_making_requests_wait_gets_them_in_parallel(tmp_path):
    endpoint = Endpoint(lambda n: 0.02)
    run(tmp_path, endpoint)
    # The probe (is it answering at all?), then one timed on the open connection, then the threads.
    assert endpoint.threads[:2] == [threading.get_ident()] * 2
    assert threading.get_ident() not in endpoint.threads[2:]
    assert endpoint.most_in_flight == SEND_CONCURRENCY


def test_a_slow_first_answer_alone_does_not_send_the_batch_to_the_threads(tmp_path):
    endpoint = Endpoint(lambda n: FAST_ANSWER_S * 10 if n == 0 else 0)  # the connection took its time to open
    run(tmp_path, endpoint)
    assert set(endpoint.threads) == {threading.get_ident()}


def test_the_first_slow_answer_hands_the_rest_to_the_threads(tmp_path):
    endpoint = Endpoint(lambda n: 0 if n < 10 else FAST_ANSWER_S * 10)
    run(tmp_path, endpoint)
    caller = threading.get_ident()
    assert endpoint.threads[:11] == [caller] * 11  # the tenth answer (n = 10) is the first slow one
    assert caller not in endpoint.threads[11:]
    assert endpoint.most_in_flight > 1
