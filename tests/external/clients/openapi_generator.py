"""A client generated from openapi.yaml by openapi-generator (`python`) talks to the sandbox relay:
a text, an image, a template, a status lookup, and a message the schema cannot refuse (two buttons
with one id) read back as a typed Problem, with `code` and `errors[0].field`.

Usage: python openapi_generator.py <directory holding the generated package> <relay URL> <token>
"""

import sys
import uuid


def main(generated: str, base_url: str, token: str) -> None:
    sys.path.insert(0, generated)
    import qikchat_relay_client as relay
    from qikchat_relay_client.exceptions import UnprocessableEntityException

    api = relay.MessagesApi(relay.ApiClient(relay.Configuration(host=base_url, access_token=token)))

    def send(message):
        return api.send_message(relay.SendRequest(message), idempotency_key=f"generated-{uuid.uuid4()}")

    text = send(relay.TextMessage(to="+91 80808 08080", type="text", text="Your OTP is 4711"))
    assert isinstance(text, relay.SendResponse) and text.id.startswith("sandbox-"), text

    image = send(
        relay.ImageMessage(to="+918080808080", type="image", link="https://cdn.example.com/i.png", caption="Receipt")
    )
    assert image.id.startswith("sandbox-"), image

    template = send(
        relay.TemplateMessage(
            to="+918080808080",
            type="template",
            template=relay.Template(
                relay.TemplateWithParameters(
                    name="order_update",
                    language="en",
                    header=relay.TemplateHeader(relay.VideoHeader(type="video", link="https://cdn.example.com/v.mp4")),
                    body=relay.TemplateBody(["Siva", "#1234"]),
                    buttons=[relay.TemplateButton(relay.UrlButton(type="url", text="orders/1234"))],
                )
            ),
        )
    )
    assert template.id.startswith("sandbox-"), template

    status = api.get_message_status(text.id)
    assert isinstance(status, relay.MessageStatus) and status.status == "queued", status

    # Valid for every schema rule; refused by the relay, which wants unique button ids.
    reply = relay.ReplyButton(type="reply", reply=relay.Reply(id="yes", title="Yes"))
    buttons = relay.InteractiveButtons(
        type="button", body=relay.InteractiveBody(text="Confirm?"), action=relay.ButtonsAction(buttons=[reply, reply])
    )
    try:
        send(relay.InteractiveMessage(to="+918080808080", type="interactive", interactive=relay.Interactive(buttons)))
    except UnprocessableEntityException as refused:
        problem = refused.data
        assert isinstance(problem, relay.Problem), (type(problem), refused.body)
        assert problem.code == "invalid_request", problem
        # openapi-generator names the property `var_field`: `field` is taken in pydantic.
        assert problem.errors and problem.errors[0].var_field == "interactive.action.buttons[1].reply.id", problem
    else:
        raise AssertionError("two buttons with one id were accepted")

    print(
        f"openapi-generator python: text {text.id}, image {image.id}, template {template.id}, "
        f"status {status.status}, 422 read as Problem ({problem.code}, {problem.errors[0].var_field})"
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
