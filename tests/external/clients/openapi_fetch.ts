// openapi-typescript turns openapi.yaml into types (schema.d.ts, next to this file); openapi-fetch
// sends with them. Values are declared with the document's own types, as a caller's code would,
// so a schema that types a field as `never` or loses a variant fails to compile here.
//   node check.js <relay URL> <token>
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type SendRequest = components["schemas"]["SendRequest"];
type TemplateMessage = components["schemas"]["TemplateMessage"];
type Problem = components["schemas"]["Problem"];

const text: SendRequest = { to: "+918080808080", type: "text", text: "Your OTP is 4711" };
const video: SendRequest = { to: "+918080808080", type: "video", link: "https://cdn.example.com/v.mp4" };
const template: TemplateMessage = {
    to: "+918080808080",
    type: "template",
    template: {
        name: "order_update",
        language: "en",
        header: { type: "video", link: "https://cdn.example.com/v.mp4" },
        body: ["Siva", "#1234"],
        buttons: [{ type: "url", text: "orders/1234" }],
    },
};
const raw: TemplateMessage = {
    to: "+918080808080",
    type: "template",
    template: { name: "order_update", language: "en_US", components: [{ type: "body", parameters: [] }] },
};

async function main(baseUrl: string, token: string): Promise<void> {
    const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
    const ids: string[] = [];
    for (const body of [text, video, template, raw]) {
        const { data, error } = await client.POST("/send", {
            body,
            params: { header: { "Idempotency-Key": `openapi-fetch-${Math.random()}` } },
        });
        if (!data) throw new Error(`refused: ${JSON.stringify(error)}`);
        ids.push(data.id);
    }

    const { data: status } = await client.GET("/messages/{id}", { params: { path: { id: ids[0] } } });
    if (status?.status !== "queued") throw new Error(`unexpected status ${JSON.stringify(status)}`);

    const { error, response } = await client.POST("/send", {
        body: { to: "+918080808080", type: "text", text: "x".repeat(4097) },
    });
    const problem: Problem | undefined = error;
    if (response.status !== 422 || problem?.code !== "invalid_request" || problem.errors?.[0]?.field !== "text") {
        throw new Error(`unexpected answer ${response.status} ${JSON.stringify(error)}`);
    }
    console.log(`openapi-typescript + openapi-fetch: sent ${ids.join(", ")}; status ${status.status}; 422 read as Problem (${problem.code}, ${problem.errors[0].field})`);
}

main(process.argv[2], process.argv[3]).catch((error: unknown) => {
    console.error(error);
    process.exit(1);
});
