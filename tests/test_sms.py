"""SMS: segment arithmetic, phone numbers, the rate limiter, and the client against the real sink.

The sink tests talk real HTTP to ``dunning.sms_sink`` (started once per session by the
``sms_server`` fixture) and read what it stored, the same way the demo does.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from dunning import services, sms_sink
from dunning.channels import Outcome, ProviderError, RateLimiter
from dunning.channels.sms import (
    GSM7_EXTENSION,
    IDEMPOTENCY_HEADER,
    SmsClient,
    SmsError,
    SmsSettings,
    encoding,
    segments,
    to_e164,
    units,
)
from dunning.services import Service
from tests.test_services import _cli

REPO = Path(__file__).resolve().parents[1]
ALEF = "ا"  # U+0627 ARABIC LETTER ALEF
ARABIC = "مرحبا، يرجى دفع الفاتورة INV-1 قبل ١٥ سبتمبر. للإلغاء أرسل STOP"

# --------------------------------------------------------------------------------------------
# encoding, units, segments


def test_plain_ascii_is_gsm7_one_unit_per_char() -> None:
    text = "Hello Jane, invoice INV-1 of $120.50 is due. Reply STOP to opt out."
    assert encoding(text) == "GSM-7"
    assert units(text) == len(text)


@pytest.mark.parametrize(("length", "expected"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3)])
def test_gsm7_segment_boundaries(length: int, expected: int) -> None:
    assert segments("a" * length) == expected


@pytest.mark.parametrize("char", ["€", "[", "]", "{", "}", "^", "~", "\\", "|", "\f"])
def test_gsm7_extension_chars_count_two(char: str) -> None:
    assert char in GSM7_EXTENSION
    assert encoding(f"pay {char} now") == "GSM-7"
    assert units(char) == 2
    assert units(f"a{char}b") == 4
    assert segments("a" * 158 + char) == 1  # 160 septets
    assert segments("a" * 159 + char) == 2  # 161 septets


def test_gsm7_basic_table_accents_and_greek_are_single_septets() -> None:
    text = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\r\n"
    assert encoding(text) == "GSM-7"
    assert units(text) == len(text)


@pytest.mark.parametrize("char", ["ê", "ç", "`", "’", "\x1b"])
def test_chars_outside_gsm_make_the_text_ucs2(char: str) -> None:
    assert encoding(f"Votre facture {char}") == "UCS-2"


def test_extension_escape_is_not_split_across_segments() -> None:
    # 306 septets would fit two 153-septet parts, but the euro's ESC would end part one.
    text = "a" * 152 + "€" + "a" * 152
    assert units(text) == 306
    assert segments(text) == 3
    assert segments("a" * 151 + "€" + "a" * 153) == 2  # the pair fits at the end of part one


def test_arabic_is_ucs2_with_70_and_67_unit_boundaries() -> None:
    assert encoding(ARABIC) == "UCS-2"
    assert units(ARABIC) == len(ARABIC)
    assert segments(ALEF * 70) == 1
    assert segments(ALEF * 71) == 2
    assert segments(ALEF * 134) == 2
    assert segments(ALEF * 135) == 3


def test_one_non_gsm_char_makes_a_160_char_text_three_segments() -> None:
    assert segments("a" * 160) == 1
    assert segments("a" * 159 + "ê") == 3  # 160 UCS-2 units: ceil(160 / 67)


def test_emoji_counts_two_units_and_is_not_split() -> None:
    assert encoding("Thanks 😀") == "UCS-2"
    assert units("😀") == 2
    assert units(ALEF * 68 + "😀") == 70
    assert segments(ALEF * 68 + "😀") == 1
    assert segments(ALEF * 69 + "😀") == 2
    text = ALEF * 66 + "😀" + ALEF * 66  # 134 units, but the pair cannot straddle part one
    assert units(text) == 134
    assert segments(text) == 3


def test_empty_text_is_zero_segments() -> None:
    assert (encoding(""), units(""), segments("")) == ("GSM-7", 0, 0)


# --------------------------------------------------------------------------------------------
# phone numbers


@pytest.mark.parametrize(
    ("number", "region", "expected"),
    [
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("+33 6 12 34 56 78", None, "+33612345678"),
        ("0033 6 12 34 56 78", "FR", "+33612345678"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "us", "+14155552671"),
        ("07400 123456", "GB", "+447400123456"),
        ("050 123 4567", "AE", "+971501234567"),
        ("(415) 555-2671", None, None),  # national number, no region
        ("123", "US", None),
        ("not a number", "US", None),
        ("+1 000 000 0000", None, None),
        ("", "US", None),
    ],
)
def test_to_e164(number: str, region: str | None, expected: str | None) -> None:
    assert to_e164(number, region) == expected


def test_to_e164_none() -> None:
    assert to_e164(None, "US") is None


# --------------------------------------------------------------------------------------------
# rate limiter


def test_rate_limiter_spaces_calls_after_the_burst() -> None:
    limiter = RateLimiter(50)
    for _ in range(50):  # a full bucket: one second's worth may go at once
        limiter.wait()
    start = time.monotonic()
    for _ in range(26):
        limiter.wait()
    assert time.monotonic() - start >= 0.45


def test_rate_limiter_none_never_waits() -> None:
    limiter = RateLimiter(None)
    start = time.monotonic()
    for _ in range(10_000):
        limiter.wait()
    assert time.monotonic() - start < 0.5


# --------------------------------------------------------------------------------------------
# settings and client, without a server


def test_settings_from_connection_and_repr_hides_token() -> None:
    conn = SimpleNamespace(
        host="127.0.0.1",
        port=8026,
        schema="http",
        login="AC123",
        password="s3cret-token",
        extra_dejson={"from": "+15005550006", "rate_per_second": 5},
    )
    settings = SmsSettings.from_connection(conn)
    assert settings == SmsSettings(
        "http://127.0.0.1:8026", "AC123", "s3cret-token", "+15005550006", 5.0, 10.0
    )
    assert "s3cret-token" not in repr(settings)
    twilio = SimpleNamespace(
        host="api.twilio.com",
        port=None,
        schema="",
        login="AC1",
        password="t",
        extra_dejson={"from": "+1"},
    )
    assert SmsSettings.from_connection(twilio).base_url == "https://api.twilio.com"
    with pytest.raises(ValueError, match="from"):
        SmsSettings.from_connection(SimpleNamespace(**{**vars(conn), "extra_dejson": {}}))


def _mock_client(handler) -> SmsClient:
    settings = SmsSettings("https://sms.test", "AC1", "tok", "+15005550006")
    return SmsClient(settings, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "payload", "permanent", "uncertain"),
    [
        (400, {"code": 21211, "message": "Invalid 'To' Phone Number"}, True, False),
        (404, {}, True, False),
        (422, {"code": 30007, "message": "filtered"}, True, False),
        (400, {"code": 21212, "message": "Invalid 'From' Phone Number"}, False, False),
        (401, {"code": 20003, "message": "Authenticate"}, False, False),
        (403, {}, False, False),
        (429, {"code": 20429, "message": "Too Many Requests"}, False, False),
        (500, {}, False, True),
        (503, {}, False, False),
    ],
)
def test_status_mapping(status: int, payload: dict, permanent: bool, uncertain: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=payload, headers={"Retry-After": "3"})

    with _mock_client(handler) as client, pytest.raises(SmsError) as caught:
        client.send("+14155552671", "hello", "ref-1")
    assert isinstance(caught.value, ProviderError)
    assert caught.value.permanent is permanent
    assert caught.value.uncertain is uncertain
    assert caught.value.status_code == status
    assert caught.value.retry_after == (3.0 if status in (429, 503) else None)


def test_transport_errors_are_not_permanent() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with _mock_client(refuse) as client, pytest.raises(SmsError) as refused:
        client.send("+14155552671", "hello", "ref-1")
    with _mock_client(hang) as client, pytest.raises(SmsError) as timed_out:
        client.send("+14155552671", "hello", "ref-1")
    assert (refused.value.permanent, refused.value.uncertain) == (False, False)
    assert (timed_out.value.permanent, timed_out.value.uncertain) == (False, True)


def test_provider_message_is_scrubbed_of_pii() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={
                "code": 21610,
                "message": "Attempt to send to +1 (415) 555-2671 with 'Jane owes 120' blocked",
            },
        )

    with _mock_client(handler) as client, pytest.raises(SmsError) as caught:
        client.send("+14155552671", "Jane owes 120", "ref-1")
    text = str(caught.value)
    assert "21610" in text
    assert "555" not in text and "2671" not in text and "Jane" not in text
    assert caught.value.permanent is True


def test_2xx_without_sid_is_uncertain() -> None:
    with (
        _mock_client(lambda r: httpx.Response(201, text="oops")) as client,
        pytest.raises(SmsError) as caught,
    ):
        client.send("+14155552671", "hello", "ref-1")
    assert (caught.value.permanent, caught.value.uncertain) == (False, True)


# --------------------------------------------------------------------------------------------
# against the real sink


def _settings(server: Service, **changes) -> SmsSettings:
    base = SmsSettings(
        base_url=server.url,
        account_sid=server.extra["account"],
        auth_token=server.extra["token"],
        sender=server.extra["sender"],
    )
    return SmsSettings(**{**base.__dict__, **changes})


def _by_sid(server: Service, sid: str) -> dict:
    found = [m for m in sms_sink.read_messages(server.extra["dir"]) if m["sid"] == sid]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def sms(sms_server: Service) -> Iterator[SmsClient]:
    with SmsClient(_settings(sms_server)) as client:
        yield client


@pytest.mark.services
def test_send_lands_in_the_sink(sms_server: Service, sms: SmsClient) -> None:
    reference = f"debtor-7|reminder_1|sms|2026-09-16|{uuid.uuid4().hex[:8]}"
    body = "Hello Jane, invoice INV-1 of $120.50 is due {today}. Reply STOP to opt out."

    outcome = sms.send("+14155552671", body, reference)

    assert isinstance(outcome, Outcome)
    assert outcome.provider == "sms"
    assert outcome.status == "queued"
    assert outcome.provider_id.startswith("SM") and len(outcome.provider_id) == 34
    stored = _by_sid(sms_server, outcome.provider_id)
    assert stored["to"] == "+14155552671"
    assert stored["from"] == services.SMS_FROM
    assert stored["body"] == body
    assert stored["idempotency_token"] == reference
    assert stored["num_segments"] == "1"
    assert datetime.fromisoformat(stored["received_at"]).tzinfo is not None
    receipts = [
        e
        for e in sms_sink.read_events(sms_server.extra["dir"])
        if e.get("sid") == outcome.provider_id
    ]
    assert receipts == [
        {
            "type": "status",
            "sid": outcome.provider_id,
            "status": "delivered",
            "to": "+14155552671",
            "at": receipts[0]["at"],
        }
    ]


@pytest.mark.services
def test_arabic_body_round_trips(sms_server: Service, sms: SmsClient) -> None:
    body = ARABIC + " 😀" * 30  # long enough for several UCS-2 parts
    outcome = sms.send("+971501234567", body, f"ar-{uuid.uuid4().hex}")
    stored = _by_sid(sms_server, outcome.provider_id)
    assert stored["body"] == body
    assert stored["num_segments"] == str(segments(body))
    assert segments(body) > 1


@pytest.mark.services
def test_one_connection_for_many_sends(sms_server: Service, sms: SmsClient) -> None:
    sids = [
        sms.send("+14155552671", f"msg {i}", f"conn-{uuid.uuid4().hex}").provider_id
        for i in range(20)
    ]

    stored = [_by_sid(sms_server, sid) for sid in sids]
    assert len({m["connection"] for m in stored}) == 1
    assert len({m["idempotency_token"] for m in stored}) == 20


@pytest.mark.services
def test_threads_share_the_client(sms_server: Service, sms: SmsClient) -> None:
    sids: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(10):
            sid = sms.send("+14155552671", f"t{n}-{i}", f"thr-{uuid.uuid4().hex}").provider_id
            with lock:
                sids.append(sid)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    stored = [_by_sid(sms_server, sid) for sid in sids]
    assert len(stored) == 40
    assert len({m["connection"] for m in stored}) <= 4  # pooled, not one per send
    raw = (Path(sms_server.extra["dir"]) / sms_sink.MESSAGES_FILE).read_text("utf-8")
    assert all(json.loads(line) for line in raw.splitlines())  # no interleaved lines


@pytest.mark.services
def test_rate_limit_applies_to_sends(sms_server: Service) -> None:
    with SmsClient(_settings(sms_server, rate_per_second=20)) as client:
        start = time.monotonic()
        for i in range(30):  # 20 from the burst, 10 more at 20/s
            client.send("+14155552671", f"rate {i}", f"rate-{uuid.uuid4().hex}")
        assert time.monotonic() - start >= 0.45


@pytest.mark.services
def test_wrong_token_is_not_permanent(sms_server: Service) -> None:
    before = len(sms_sink.read_messages(sms_server.extra["dir"]))
    with (
        SmsClient(_settings(sms_server, auth_token="wrong")) as client,
        pytest.raises(ProviderError) as caught,
    ):
        client.send("+14155552671", "hello", "bad-token")
    assert caught.value.permanent is False
    assert isinstance(caught.value, SmsError) and caught.value.status_code == 401
    assert len(sms_sink.read_messages(sms_server.extra["dir"])) == before


@pytest.mark.services
def test_wrong_sender_is_not_permanent(sms_server: Service) -> None:
    with (
        SmsClient(_settings(sms_server, sender="Dunning")) as client,
        pytest.raises(SmsError) as bad_from,
    ):
        client.send("+14155552671", "hello", "bad-from")
    assert (bad_from.value.permanent, bad_from.value.code) == (False, 21212)


@pytest.mark.services
def test_non_mobile_number_is_permanent_without_pii(sms_server: Service, sms: SmsClient) -> None:
    body = "Jane Doe owes 120.50 on INV-1"
    with pytest.raises(ProviderError) as caught:
        sms.send("+14155550000", body, "landline")
    error = caught.value
    assert error.permanent is True
    assert isinstance(error, SmsError) and (error.status_code, error.code) == (400, 21614)
    text = str(error)
    assert "21614" in text and "not a mobile number" in text
    assert "4155550000" not in text and "0000" not in text
    assert "Jane" not in text and "INV-1" not in text


@pytest.mark.services
def test_invalid_number_is_permanent(sms: SmsClient) -> None:
    with pytest.raises(SmsError) as caught:
        sms.send("415-555-2671", "hello", "not-e164")
    assert (caught.value.permanent, caught.value.code) == (True, 21211)


@pytest.mark.services
def test_sink_down_is_not_permanent(tmp_path: Path) -> None:
    sink = services.start_sms(tmp_path / "sms")
    settings = _settings(sink)
    services.stop(sink)
    with SmsClient(settings) as client, pytest.raises(SmsError) as caught:
        client.send("+14155552671", "hello", "down")
    assert (caught.value.permanent, caught.value.uncertain) == (False, False)


@pytest.mark.services
def test_add_inbound_and_read_events(sms_server: Service) -> None:
    directory = sms_server.extra["dir"]
    at = datetime(2026, 9, 16, 14, 5, tzinfo=UTC)
    event = sms_sink.add_inbound(directory, "+14155552671", "STOP", at=at, to=services.SMS_FROM)

    assert event["type"] == "inbound" and event["sid"].startswith("SM")
    assert event["at"] == "2026-09-16T14:05:00.000Z"
    assert event in sms_sink.read_events(directory)
    assert sms_sink.read_events(Path(directory) / "nowhere") == []


def test_add_inbound_to_a_new_folder(tmp_path: Path) -> None:
    sms_sink.add_inbound(tmp_path / "sms", "+33612345678", "STOP")
    sms_sink.add_inbound(tmp_path / "sms", "+33612345678", "ARRET", at="2026-09-16T10:00:00Z")
    events = sms_sink.read_events(tmp_path / "sms")
    assert [e["body"] for e in events] == ["STOP", "ARRET"]
    assert events[1]["at"] == "2026-09-16T10:00:00Z"
    with pytest.raises(ValueError, match="aware"):
        sms_sink.add_inbound(tmp_path / "sms", "+1", "x", at=datetime(2026, 1, 1))


# --------------------------------------------------------------------------------------------
# the service: health, loopback, env, CLI, stop


@pytest.mark.services
def test_health_and_idempotency_header_name(sms_server: Service) -> None:
    response = httpx.get(f"{sms_server.url}/health", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert IDEMPOTENCY_HEADER == "I-Twilio-Idempotency-Token"


@pytest.mark.services
def test_sms_sink_listens_on_loopback_only(sms_server: Service) -> None:
    out = subprocess.run(["ss", "-H", "-ltnp"], capture_output=True, text=True, check=False).stdout
    mine = [line.split()[3] for line in out.splitlines() if f"pid={sms_server.pid}," in line]
    if not mine:
        pytest.skip("ss shows no process ids here")
    assert mine == [f"127.0.0.1:{sms_server.port}"]


def test_sms_connection_env_shape() -> None:
    sms = Service(
        "sms",
        3,
        8026,
        "http://127.0.0.1:8026",
        Path("/z"),
        {"dir": "/z/sms", "account": "AC" + "0" * 32, "token": "t0k", "sender": services.SMS_FROM},
    )
    env = services.airflow_connection_env(None, None, sms=sms)
    conn = json.loads(env["AIRFLOW_CONN_SMS_DEFAULT"])
    assert conn == {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": 8026,
        "schema": "http",
        "login": "AC" + "0" * 32,
        "password": "t0k",
        "extra": {"from": "+15005550006"},
    }
    assert services.service_env({"sms": sms})["DUNNING_SMS_DIR"] == "/z/sms"
    # The connection is what the Airflow side turns into settings.
    settings = SmsSettings.from_connection(
        SimpleNamespace(
            **{k: conn[k] for k in ("host", "port", "schema", "login", "password")},
            extra_dejson=conn["extra"],
        )
    )
    assert settings.base_url == "http://127.0.0.1:8026"
    assert "sms" in services.SERVICE_NAMES


@pytest.mark.services
def test_cli_starts_and_stops_sms(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _cli(*args, "--state-dir", str(tmp_path))

    started = cli("start", "--which", "sms")
    assert started.returncode == 0, started.stderr
    try:
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in started.stdout.splitlines()
            if line.startswith("export ")
        )
        assert {"AIRFLOW_CONN_SMS_DEFAULT", "DUNNING_SMS_DIR"} <= set(exports)
        (sink,) = services.load_state(tmp_path)
        assert services.is_running(sink)
        assert sink.extra["token"] not in Path(f"/proc/{sink.pid}/cmdline").read_text(
            errors="replace"
        )
        with SmsClient(_settings(sink)) as client:
            outcome = client.send("+14155552671", "via cli", "cli-1")
        assert _by_sid(sink, outcome.provider_id)["body"] == "via cli"
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not services.is_running(sink)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sink.url}/health", timeout=2)


@pytest.mark.services
def test_stop_is_clean_and_idempotent(tmp_path: Path) -> None:
    sink = services.start_sms(tmp_path / "sms")
    assert services.is_running(sink)
    services.stop(sink)
    assert not services.is_running(sink)
    assert "sms sink stopped" in Path(sink.extra["log"]).read_text()
    services.stop(sink)


@pytest.mark.services
def test_sink_validates_like_the_provider(sms_server: Service) -> None:
    auth = (sms_server.extra["account"], sms_server.extra["token"])
    own = f"{sms_server.url}/2010-04-01/Accounts/{sms_server.extra['account']}/Messages.json"
    other = f"{sms_server.url}/2010-04-01/Accounts/AC{'1' * 32}/Messages.json"
    form = {"To": "+14155552671", "From": services.SMS_FROM, "Body": "hi"}
    with httpx.Client(auth=auth, timeout=5) as http:
        assert http.post(other, data=form).json()["code"] == 20404
        assert http.post(own, data={**form, "Body": ""}).json()["code"] == 21602
        assert http.post(own, data={**form, "Body": "x" * 1601}).json()["code"] == 21617
        assert http.post(own, data={**form, "To": "14155552671"}).json()["code"] == 21211
        created = http.post(own, data=form)
    assert created.status_code == 201
    assert created.json()["num_segments"] == "1"
    assert _by_sid(sms_server, created.json()["sid"])["idempotency_token"] is None


def test_account_not_found_stops_the_wave() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"code": 20404, "message": "not found"})

    with _mock_client(handler) as client, pytest.raises(SmsError) as caught:
        client.send("+14155552671", "hello", "ref-1")
    assert caught.value.permanent is False
