// A client generated from openapi.yaml by openapi-generator (`typescript-fetch`) talks to the
// sandbox relay: a text, an image and a template declared with the generated types, a status
// lookup, and a message the schema cannot refuse (two buttons with one id) read back as a Problem.
//
// Copied next to the generated index.ts, compiled with tsc --strict and run with node:
//   node check.js <relay URL> <token>
import {
    Configuration,
    MessagesApi,
    ProblemFromJSON,
    ResponseError,
    type SendRequest,
    type TemplateMessage,
} from "./index";

async function main(baseUrl: string, token: string): Promise<void> {
    const api = new MessagesApi(new Configuration({ basePath: baseUrl, accessToken: token }));
    const send = (message: SendRequest) =>
        api.sendMessage({ sendRequest: message, idempotencyKey: `typescript-fetch-${Math.random()}` });

    const text: SendRequest = { to: "+918080808080", type: "text", text: "Your OTP is 4711" };
    const image: SendRequest = {
        to: "+918080808080",
        type: "image",
        link: "https://cdn.example.com/i.png",
        caption: "Receipt",
    };
    const template: TemplateMessage = {
        to: "+918080808080",
        type: "template",
        template: {
            name: "order_update",
            language: "en",
            header: { type: "image", link: "https://cdn.example.com/i.png" },
            body: ["Siva", "#1234"],
            buttons: [{ type: "quick_reply", payload: "stop" }],
        },
    };
    const ids: string[] = [];
    for (const message of [text, image, template]) {
        const sent = await send(message);
        if (!sent.id.startsWith("sandbox-")) throw new Error(`unexpected answer ${JSON.stringify(sent)}`);
        ids.push(sent.id);
    }

    const status = await api.getMessageStatus({ id: ids[0] });
    if (status.status !== "queued") throw new Error(`unexpected status ${JSON.stringify(status)}`);

    const reply = { type: "reply", reply: { id: "yes", title: "Yes" } } as const;
    try {
        await send({
            to: "+918080808080",
            type: "interactive",
            interactive: { type: "button", body: { text: "Confirm?" }, action: { buttons: [reply, reply] } },
        });
        throw new Error("two buttons with one id were accepted");
    } catch (error) {
        if (!(error instanceof ResponseError) || error.response.status !== 422) throw error;
        const problem = ProblemFromJSON(await error.response.json());
        const field = problem.errors?.[0]?.field;
        if (problem.code !== "invalid_request" || field !== "interactive.action.buttons[1].reply.id") {
            throw new Error(`unexpected problem ${JSON.stringify(problem)}`);
        }
        console.log(`openapi-generator typescript-fetch: sent ${ids.join(", ")}; status ${status.status}; 422 read as Problem (${problem.code}, ${field})`);
    }
}

main(process.argv[2], process.argv[3]).catch((error: unknown) => {
    console.error(error);
    process.exit(1);
});
