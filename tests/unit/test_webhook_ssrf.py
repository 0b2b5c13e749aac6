"""Webhook URLs that would make the service call into its own network are refused, whatever their spelling."""

from __future__ import annotations

import socket

import pytest

from smartsvc.webhooks.ssrf import (
    MAX_URL_LENGTH,
    DestinationUnresolvable,
    UnsafeDestination,
    check_url,
    system_resolve,
    unsafe_reason,
)

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:4700:4700::1111"


def resolver(*answers: str):
    """A resolver answering every name with ``answers``, recording what it was asked."""

    def resolve(host: str, port: int) -> list[str]:
        resolve.calls.append((host, port))
        return list(answers)

    resolve.calls = []
    return resolve


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"an IP literal must not be resolved (asked for {host})")


def check(url: str, *, allow_private: bool = False, allow_http: bool = True, resolve=no_dns):
    return check_url(url, allow_private=allow_private, allow_http=allow_http, resolve=resolve)


LOOPBACK_SPELLINGS = [
    "http://127.0.0.1/",
    "http://2130706433/",  # decimal
    "http://0177.0.0.1/",  # octal
    "http://0x7f.1/",  # hex, short
    "http://0x7F000001/",
    "http://127.1/",  # short
    "http://127.0.1/",
    "http://0177.0.0.01/",
    "http://127.0.0.1./",  # trailing dot
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://１２７.０.０.１/",  # full-width digits and dots
]


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_refused(url):
    with pytest.raises(UnsafeDestination, match=r"^url: .*loopback"):
        check(url)


@pytest.mark.parametrize("url", ["https://localhost/", "https://LOCALHOST./", "https://api.localhost/",
                                 "https://LocalHost:8443/x"])
def test_localhost_names_are_loopback_without_asking_dns(url):
    with pytest.raises(UnsafeDestination, match="loopback"):
        check(url)  # no_dns: a resolver that says otherwise is never consulted


@pytest.mark.parametrize(("url", "kind"), [
    ("https://10.0.0.5/hook", "private"),
    ("https://172.16.3.4/", "private"),
    ("https://192.168.1.1/", "private"),
    ("https://[fc00::5]/", "private"),
    ("https://169.254.169.254/latest/meta-data/", "metadata"),
    ("https://[fd00:ec2::254]/", "metadata"),
    ("https://[::ffff:169.254.169.254]/", "metadata"),
    ("https://2852039166/", "metadata"),  # 169.254.169.254 in decimal
    ("https://169.254.10.1/", "link-local"),
    ("https://[fe80::1]/", "link-local"),
    ("https://100.64.0.1/", "CGNAT"),
    ("https://100.127.255.254/", "CGNAT"),
    ("https://224.0.0.1/", "multicast"),
    ("https://[ff02::1]/", "multicast"),
    ("https://240.0.0.1/", "reserved"),
    ("https://255.255.255.255/", "reserved"),
    ("https://0.0.0.0/", "unspecified"),
    ("https://0/", "unspecified"),
    ("https://[::]/", "unspecified"),
    ("https://192.0.2.10/", "not a public|private"),  # documentation range
    ("https://[2002:a00:1::]/", "private"),  # 6to4 of 10.0.0.1
    ("https://[64:ff9b::a00:1]/", "private"),  # NAT64 of 10.0.0.1
    # Teredo: server 65.54.227.120, client 192.168.1.1 (stored inverted as 3f57:fefe)
    ("https://[2001:0:4136:e378:8000:63bf:3f57:fefe]/", "private"),
])
def test_non_public_addresses_are_refused_with_a_reason(url, kind):
    with pytest.raises(UnsafeDestination, match=kind) as refused:
        check(url)
    assert str(refused.value).startswith("url: ")


def test_the_message_names_the_address_as_the_partner_wrote_it():
    with pytest.raises(UnsafeDestination) as refused:
        check("https://10.0.0.5/hook")
    assert str(refused.value) == "url: 10.0.0.5 is a private address"
    with pytest.raises(UnsafeDestination) as refused:
        check("http://2130706433/")
    assert "2130706433" in str(refused.value) and "127.0.0.1" in str(refused.value)


def test_a_name_resolving_to_a_private_address_is_refused_naming_both():
    with pytest.raises(UnsafeDestination) as refused:
        check("https://partner.example/hook", resolve=resolver("10.1.2.3"))
    assert str(refused.value) == "url: partner.example resolves to 10.1.2.3, which is a private address"


@pytest.mark.parametrize("answers", [
    (PUBLIC_V4, "127.0.0.1"),
    ("127.0.0.1", PUBLIC_V4),
    (PUBLIC_V4, PUBLIC_V6, "fd12::1"),
    (PUBLIC_V4, "::ffff:10.0.0.1"),
    (PUBLIC_V6, "169.254.169.254"),
])
def test_one_non_public_answer_among_public_ones_is_enough_to_refuse(answers):
    with pytest.raises(UnsafeDestination):
        check("https://partner.example/", resolve=resolver(*answers))


def test_public_answers_are_accepted_and_become_the_addresses_to_connect_to():
    resolve = resolver(PUBLIC_V4, PUBLIC_V6, PUBLIC_V4)
    dest = check("https://Partner.Example./hooks/in?x=1#frag", allow_http=False, resolve=resolve)
    assert dest.addresses == (PUBLIC_V4, PUBLIC_V6)
    assert (dest.scheme, dest.host, dest.port) == ("https", "partner.example", 443)
    assert dest.url == "https://partner.example/hooks/in?x=1"
    assert resolve.calls == [("partner.example", 443)]


def test_ports_and_ip_literals_are_kept_in_the_normalised_url():
    assert check("https://[2606:4700:4700::1111]:8443/x").url == "https://[2606:4700:4700::1111]:8443/x"
    dest = check("http://0x5d.0xb8.0xd7.0x0e:8080")
    assert (dest.url, dest.port, dest.addresses) == (f"http://{PUBLIC_V4}:8080/", 8080, (PUBLIC_V4,))


def test_https_is_required_unless_plain_http_is_allowed():
    with pytest.raises(UnsafeDestination, match="https.*SMARTSVC_WEBHOOK_ALLOW_HTTP"):
        check_url(f"http://{PUBLIC_V4}/", allow_private=False, allow_http=False)
    assert check_url(f"http://{PUBLIC_V4}/", allow_private=False, allow_http=True).scheme == "http"
    for url in (f"ftp://{PUBLIC_V4}/", "file:///etc/passwd", f"gopher://{PUBLIC_V4}/", "//example.com/", "hook"):
        with pytest.raises(UnsafeDestination):
            check_url(url, allow_private=True, allow_http=True)


def test_allow_private_lifts_the_address_check_and_nothing_else():
    assert check("http://127.0.0.1:8080/", allow_private=True).addresses == ("127.0.0.1",)
    assert check("https://localhost/", allow_private=True).addresses == ("127.0.0.1", "::1")
    assert check("https://partner.example/", allow_private=True,
                 resolve=resolver(PUBLIC_V4, "10.0.0.1")).addresses == (PUBLIC_V4, "10.0.0.1")
    with pytest.raises(UnsafeDestination, match="https"):
        check_url("http://127.0.0.1/", allow_private=True, allow_http=False)
    with pytest.raises(UnsafeDestination, match="user name"):
        check("https://user:pw@127.0.0.1/", allow_private=True)


def test_allow_http_does_not_lift_the_address_check():
    with pytest.raises(UnsafeDestination, match="private"):
        check_url("http://192.168.0.10/", allow_private=False, allow_http=True)


@pytest.mark.parametrize("url", [
    f"https://user:secret@{PUBLIC_V4}/",
    f"https://user@{PUBLIC_V4}/",
    f"https://:@{PUBLIC_V4}/",
    f"https://{PUBLIC_V4}@127.0.0.1/",
])
def test_user_info_is_refused(url):
    with pytest.raises(UnsafeDestination, match="user name or password"):
        check(url, allow_private=True)


@pytest.mark.parametrize(("url", "match"), [
    ("https://256.1.1.1/", "IPv4"),
    ("https://1.2.3.4.5/", "IPv4"),
    ("https://0x100.0.0.1/", "IPv4"),
    ("https://exa_mple..com/", "host name"),
    ("https://-bad.example/", "host name"),
    ("https://ex ample.com/", "spaces"),
    ("https://example.com\\@127.0.0.1/", "backslash"),
    ("https://example.com/\r\nX-Injected: 1", "control"),
    (f"https://{PUBLIC_V4}:99999/", "port"),
    (f"https://{PUBLIC_V4}:0/", "port"),
    (f"https://{PUBLIC_V4}:http/", "port"),
    ("https://[fe80::1%25eth0]/", "zone"),
    ("https://[1.2.3.4]/", "IPv6|not a valid URL"),
    ("https:///path", "no host"),
    ("https://" + "a" * 64 + ".example/", "host name"),
])
def test_malformed_urls_are_refused_with_a_reason(url, match):
    with pytest.raises(UnsafeDestination, match=match):
        check(url, allow_private=True, resolve=resolver(PUBLIC_V4))


def test_url_length_is_capped():
    base = "https://partner.example/"
    assert check(base + "a" * (MAX_URL_LENGTH - len(base)), resolve=resolver(PUBLIC_V4))
    with pytest.raises(UnsafeDestination, match=str(MAX_URL_LENGTH)):
        check(base + "a" * (MAX_URL_LENGTH - len(base) + 1), resolve=resolver(PUBLIC_V4))


def test_a_name_that_does_not_resolve_is_refused_as_unresolvable():
    def failing(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(DestinationUnresolvable, match="partner.example does not resolve"):
        check("https://partner.example/", resolve=failing)
    with pytest.raises(DestinationUnresolvable):
        check("https://partner.example/", resolve=resolver())
    # Registration can catch one exception for every refusal.
    assert issubclass(DestinationUnresolvable, UnsafeDestination)


def test_the_default_resolver_returns_ip_strings_from_the_system():
    # /etc/hosts answers "localhost" without any network.
    assert set(system_resolve("localhost", 443)) & {"127.0.0.1", "::1"}


@pytest.mark.parametrize("address", [PUBLIC_V4, PUBLIC_V6, "8.8.8.8", "2002:808:808::"])
def test_public_addresses_have_no_reason_to_be_refused(address):
    assert unsafe_reason(address) is None
