"""A client generated from openapi.yaml by openapi-python-client talks to the sandbox relay:
a text and a template message, a status lookup, a validation error parsed as a Problem, and a
message queued with POST /messages, followed by its relay id until Qikchat (the sandbox) took it.

Usage: python openapi_python_client.py <directory holding the generated `client` package> <relay URL> <token>
"""

import sys
import time
import uuid


def main(generated: str, base_url: str, token: str) -> None:
    sys.path.insert(0, generated)
    from client import AuthenticatedClient
    from client.api.messages import get_message_status, queue_message, send_message
    from client.models import (
        Accepted,
        DocumentHeader,
        MessageStatus,
        Problem,
        SendResponse,
        TemplateMessage,
        TemplateWithParameters,
        QueuedTextMessage,
        TextMessage,
        UrlButton,
    )

    relay = AuthenticatedClient(base_url=base_url, token=token)

    text = TextMessage(to="+91 80808 08080", type_="text", text="Your OTP is 4711")
    sent = send_message.sync_detailed(client=relay, body=text, idempotency_key=f"client-{uuid.uuid4()}")
    assert sent.status_code == 200 and isinstance(sent.parsed, SendResponse), (sent.status_code, sent.content)
    assert sent.parsed.id.startswith("sandbox-") and sent.parsed.status == "queued", sent.parsed

    template = TemplateMessage(
        to="+918080808080",
        type_="template",
        template=TemplateWithParameters(
            name="order_update",
            language="en",
            header=DocumentHeader(type_="document", link="https://cdn.example.com/o.pdf", filename="order.pdf"),
            body=["Siva", "#1234"],
            buttons=[UrlButton(type_="url", text="orders/1234")],
        ),
    )
    sent_template = send_message.sync_detailed(client=relay, body=template)
    assert sent_template.status_code == 200, (sent_template.status_code, sent_template.content)
    assert isinstance(sent_template.parsed, SendResponse) and sent_template.parsed.id.startswith("sandbox-")

    status = get_message_status.sync(client=relay, id=sent.parsed.id)
    assert isinstance(status, MessageStatus) and status.status == "queued", status

    refused = send_message.sync_detailed(client=relay, body=TextMessage(to="12", type_="text", text="x"))
    assert refused.status_code == 422 and isinstance(refused.parsed, Problem), (refused.status_code, refused.content)
    assert refused.parsed.code == "invalid_request" and refused.parsed.errors[0].field == "to", refused.parsed

    later = QueuedTextMessage(to="+918080808080", type_="text", text="Your order has shipped", reference="order-1")
    queued = queue_message.sync_detailed(client=relay, body=later, idempotency_key=f"client-{uuid.uuid4()}")
    assert queued.status_code == 202 and isinstance(queued.parsed, Accepted), (queued.status_code, queued.content)
    assert queued.parsed.id.startswith("msg_"), queued.parsed
    deadline = time.monotonic() + 10
    while True:
        outbox = get_message_status.sync(client=relay, id=queued.parsed.id)
        assert isinstance(outbox, MessageStatus) and outbox.reference == "order-1", outbox
        if outbox.status == "queued":
            assert outbox.qikchat_id.startswith("sandbox-"), outbox
            break
        assert time.monotonic() < deadline, outbox
        time.sleep(0.1)

    print(
        f"openapi-python-client: text {sent.parsed.id}, template {sent_template.parsed.id}, status queued, "
        f"422 parsed, outbox {queued.parsed.id} queued as {outbox.qikchat_id}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
