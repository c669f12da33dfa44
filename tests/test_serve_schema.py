"""Property-based tests of the REST API against its own OpenAPI spec (schemathesis): no 5xx.

schemathesis checks every answer: no 5xx, status codes, content types and bodies as
documented, valid data accepted, invalid data refused, and (with a token) missing or wrong
credentials refused. JSON Schema cannot say "a decodable image", so in the positive run the
generated upload contents are replaced with real images of random size, mode and format, and
this test (not schemathesis, which no longer knows the body is valid) checks they succeed.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cxrkit.serve.app import Limits, build_app
from test_export import make_run

EXAMPLES = 30
TOKEN = "property-token"
CHANNELS = {"L": None, "RGB": 3, "RGBA": 4}
BODY_VALIDITY_CHECKS = [schemathesis.checks.positive_data_acceptance,
                        schemathesis.checks.negative_data_rejection]


@st.composite
def image_files(draw) -> bytes:
    """A PNG or JPEG of random size (1-300 px a side), grey, RGB, RGBA or 16-bit grey."""
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "I;16"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    else:
        shape = (height, width) + ((CHANNELS[mode],) if CHANNELS[mode] else ())
        image = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)
    image_format = draw(st.sampled_from(["PNG", "JPEG"])) if mode in ("L", "RGB") else "PNG"
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def with_images(case, images: list[bytes]):
    if case.method == "POST":
        case.body = {**(case.body if isinstance(case.body, dict) else {}), "images": images}
    return case


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("schema") / "run", threshold=0.4)


def test_valid_requests_succeed_and_match_the_spec(run):
    schema = schemathesis.openapi.from_asgi("/openapi.json", build_app(run, limits=Limits(max_upload_mb=4)))
    cases = st.builds(with_images, schema.as_strategy(schemathesis.GenerationMode.POSITIVE),
                      st.lists(image_files(), min_size=1, max_size=3))
    statuses = []

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call_and_validate(excluded_checks=BODY_VALIDITY_CHECKS)
        statuses.append((case.method, response.status_code))

    check()
    assert ("POST", 200) in statuses
    assert all(status == 200 for _, status in statuses), statuses


def test_invalid_requests_get_documented_4xx_never_5xx(run):
    schema = schemathesis.openapi.from_asgi("/openapi.json",
                                            build_app(run, token=TOKEN, limits=Limits(max_upload_mb=1)))
    statuses = []

    @given(case=schema.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
        statuses.append(response.status_code)

    check()
    assert statuses and all(status < 500 for status in statuses)
    assert any(400 <= status < 500 for status in statuses)
