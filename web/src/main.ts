/**
 * The web page: sign up, sign in and out, a prompt form, the generation's live progress (bar, step,
 * queue position, ETA, preview), its images (a blurhash placeholder while each loads), cancel, the
 * credits left and the recent generations. It talks to the service only through the client library.
 */
import { decode } from 'blurhash';
import { createClient, SdJobsError, type Progress, type SdJobsClient } from '../../client/src/index.js';
import './style.css';

/** `npm run dev` writes the demo user's token into the page, so a first look needs no sign-in. */
declare global {
  interface Window {
    __SDJOBS__?: { token?: string };
  }
}

const TOKEN_KEY = 'sdjobs.token';
/** Set by signing out, so that dev's demo token is not taken up again in this tab. */
const SIGNED_OUT_KEY = 'sdjobs.signedOut';
const PAGE_SIZE = 6;
const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

interface Me {
  email: string;
  photoCredits: number;
  emailVerified: boolean;
}

interface Image {
  url: string;
  thumbnailUrl: string;
  width: number;
  height: number;
  blurhash: string;
}

interface Recent {
  id: string;
  status: string;
  createdAt: string;
  input: { prompt: string };
  images: Image[];
}

const ME = `query WebMe { me { email photoCredits emailVerified } }`;
const SIGN_IN = `mutation WebSignIn($email: String!, $password: String!) { signIn(email: $email, password: $password) { token } }`;
const SIGN_UP = `mutation WebSignUp($email: String!, $password: String!) { signUp(email: $email, password: $password) { message } }`;
const SIGN_OUT = `mutation WebSignOut { signOut }`;
const RECENT = `query WebRecent($first: Int, $after: String) {
  generations(first: $first, after: $after) {
    edges { node { id status createdAt input { prompt } images { url thumbnailUrl width height blurhash } } }
    pageInfo { hasNextPage endCursor }
  }
}`;

const app = document.querySelector<HTMLDivElement>('#app')!;

/** Creates an element with attributes and children; text is always set as text, never as HTML. */
function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Partial<Record<string, string | boolean>> = {},
  ...children: Array<Node | string | null | undefined | false>
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === undefined) continue;
    el.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children) if (child) el.append(child);
  return el;
}

function client(): SdJobsClient {
  return createClient({ url: location.origin, token: localStorage.getItem(TOKEN_KEY) ?? undefined });
}

const messageOf = (err: unknown) => (err instanceof SdJobsError ? err.message : 'Something went wrong; try again.');

/** An image that shows its blurhash until the real one has loaded. */
function placeholderImage(image: Image, src: string, label: string): HTMLElement {
  const frame = h('div', { class: 'image' });
  // Through the CSSOM, not a style attribute: the page's Content-Security-Policy refuses inline styles.
  frame.style.aspectRatio = `${image.width} / ${image.height}`;
  const canvas = h('canvas', { width: '32', height: String(Math.max(1, Math.round((32 * image.height) / image.width))), 'aria-hidden': 'true' });
  try {
    const pixels = decode(image.blurhash, canvas.width, canvas.height);
    const ctx = canvas.getContext('2d');
    if (ctx) {
      const data = ctx.createImageData(canvas.width, canvas.height);
      data.data.set(pixels);
      ctx.putImageData(data, 0, 0);
    }
  } catch {
    // A hash that does not decode leaves a plain placeholder.
  }
  const img = h('img', { src, alt: label, loading: 'lazy', decoding: 'async' });
  img.addEventListener('load', () => frame.classList.add('loaded'));
  frame.append(canvas, img);
  return frame;
}

// ---- signed out ----

function renderSignedOut(notice = ''): void {
  let mode: 'in' | 'up' = 'in';
  const status = h('p', { class: 'notice', role: 'status' }, notice);
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'email', required: true, placeholder: 'you@example.com' });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true, minlength: '8' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const switcher = h('button', { type: 'button', class: 'link' }, 'New here? Create an account');
  const form = h(
    'form',
    { class: 'card auth', 'aria-label': 'Account' },
    h('h2', {}, 'Sign in'),
    h('label', {}, 'Email', email),
    h('label', {}, 'Password', password),
    submit,
    switcher,
    status,
  );
  switcher.addEventListener('click', () => {
    mode = mode === 'in' ? 'up' : 'in';
    form.querySelector('h2')!.textContent = mode === 'in' ? 'Sign in' : 'Create an account';
    submit.textContent = mode === 'in' ? 'Sign in' : 'Sign up';
    switcher.textContent = mode === 'in' ? 'New here? Create an account' : 'Have an account? Sign in';
    password.autocomplete = mode === 'in' ? 'current-password' : 'new-password';
    status.textContent = '';
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit.disabled = true;
    status.textContent = '';
    const vars = { email: email.value, password: password.value };
    const done = () => (submit.disabled = false);
    if (mode === 'up') {
      client()
        .request<{ signUp: { message: string } }, typeof vars>(SIGN_UP, vars)
        .then((r) => (status.textContent = r.signUp.message), (err: unknown) => (status.textContent = messageOf(err)))
        .finally(done);
    } else {
      client()
        .request<{ signIn: { token: string } }, typeof vars>(SIGN_IN, vars)
        .then((r) => {
          localStorage.setItem(TOKEN_KEY, r.signIn.token);
          sessionStorage.removeItem(SIGNED_OUT_KEY);
          void start();
        }, (err: unknown) => (status.textContent = messageOf(err)))
        .finally(done);
    }
  });
  app.replaceChildren(header(null), h('main', {}, h('section', { class: 'intro' }, h('h1', {}, 'Images from a prompt, live.'), h('p', {}, 'Sign in, describe a picture, and watch Stable Diffusion draw it step by step.')), form));
}

// ---- signed in ----

function header(me: Me | null, onSignOut?: () => void): HTMLElement {
  const right = me
    ? h(
        'div',
        { class: 'account' },
        h('span', { class: 'credits', 'data-testid': 'credits' }, `${me.photoCredits} credits`),
        h('span', { class: 'email' }, me.email),
        (() => {
          const b = h('button', { type: 'button', class: 'link' }, 'Sign out');
          b.addEventListener('click', () => onSignOut?.());
          return b;
        })(),
      )
    : null;
  return h('header', {}, h('a', { class: 'brand', href: '/' }, 'SD jobs'), right);
}

async function renderSignedIn(me: Me): Promise<void> {
  const sdk = client();
  /** The generation under way: its abort from the moment it is sent, its id from its first event. */
  let current: { id: string | null; abort: AbortController } | null = null;

  const signOut = async () => {
    // A generation under way keeps running (signing out does not cancel it); its stream only
    // updates elements that are no longer shown.
    // The demo token dev wrote into the page is GraphiQL's too: forgotten here, not revoked.
    if (localStorage.getItem(TOKEN_KEY) !== window.__SDJOBS__?.token) await sdk.request(SIGN_OUT).catch(() => undefined);
    localStorage.removeItem(TOKEN_KEY);
    sessionStorage.setItem(SIGNED_OUT_KEY, '1');
    renderSignedOut('Signed out.');
  };
  const refreshCredits = async () => {
    const fresh = await sdk.request<{ me: Me | null }, Record<string, never>>(ME).catch(() => null);
    const credits = app.querySelector('[data-testid="credits"]');
    if (fresh?.me && credits) credits.textContent = `${fresh.me.photoCredits} credits`;
  };

  // The form.
  const prompt = h('textarea', { name: 'prompt', rows: '3', required: true, maxlength: '2000', placeholder: 'a lighthouse at dusk, oil painting' });
  const negative = h('input', { name: 'negativePrompt', placeholder: 'blurry, low quality' });
  const size = h('select', { name: 'size' }, ...['512x512', '768x512', '512x768', '256x256'].map((s) => h('option', { value: s }, s.replace('x', ' × '))));
  const steps = h('input', { name: 'steps', type: 'number', min: '1', max: '150', value: '20' });
  const batch = h('input', { name: 'batchSize', type: 'number', min: '1', max: '4', value: '1' });
  const seed = h('input', { name: 'seed', type: 'number', value: '-1' });
  const go = h('button', { type: 'submit', class: 'primary' }, 'Generate');
  const formError = h('p', { class: 'error', role: 'alert' });
  const form = h(
    'form',
    { class: 'card generate', 'aria-label': 'New generation' },
    h('label', { class: 'wide' }, 'Prompt', prompt),
    h('label', { class: 'wide' }, 'Negative prompt', negative),
    h('div', { class: 'row' }, h('label', {}, 'Size', size), h('label', {}, 'Steps', steps), h('label', {}, 'Images', batch), h('label', {}, 'Seed', seed)),
    go,
    formError,
  );

  // The live generation.
  const statusLine = h('div', { class: 'status', 'data-testid': 'status' }, 'Nothing running.');
  const fill = h('div', { class: 'fill' });
  const barEl = h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': '0' }, fill);
  const detail = h('div', { class: 'detail', 'data-testid': 'detail' });
  const preview = h('img', { class: 'preview', alt: 'Live preview', hidden: true, 'data-testid': 'preview' });
  const results = h('div', { class: 'results', 'data-testid': 'results' });
  const cancel = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Cancel');
  const live = h('section', { class: 'card live', 'aria-live': 'polite' }, statusLine, barEl, detail, cancel, preview, results);

  // Recent generations.
  const list = h('ul', { class: 'recent', 'data-testid': 'recent' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'More');
  let after: string | null = null;
  /** Bumped by each reload: a page that arrives after a newer reload started is dropped. */
  let loads = 0;
  const loadRecent = async (reset: boolean) => {
    const load = reset ? ++loads : loads;
    if (reset) after = null;
    const page = await sdk.request<{ generations: { edges: Array<{ node: Recent }>; pageInfo: { hasNextPage: boolean; endCursor: string | null } } }, { first: number; after: string | null }>(RECENT, { first: PAGE_SIZE, after });
    if (load !== loads) return;
    if (reset) list.replaceChildren();
    for (const { node } of page.generations.edges) {
      const thumb = node.images[0];
      list.append(
        h(
          'li',
          { 'data-status': node.status },
          thumb ? placeholderImage(thumb, thumb.thumbnailUrl, node.input.prompt) : h('div', { class: 'image empty' }),
          h('div', {}, h('p', { class: 'prompt' }, node.input.prompt), h('p', { class: `badge ${node.status.toLowerCase()}` }, node.status), h('time', { datetime: node.createdAt }, new Date(node.createdAt).toLocaleString())),
        ),
      );
    }
    after = page.generations.pageInfo.endCursor;
    more.hidden = !page.generations.pageInfo.hasNextPage;
  };
  more.addEventListener('click', () => void loadRecent(false));

  const show = (p: Progress) => {
    const pct = Math.round(p.progress * 100);
    fill.style.width = `${pct}%`;
    barEl.setAttribute('aria-valuenow', String(pct));
    barEl.dataset.status = p.status;
    statusLine.textContent = p.status.replace('_', ' ').toLowerCase().replace(/^\w/, (c) => c.toUpperCase());
    const parts: string[] = [];
    if (p.status === 'SUCCEEDED') parts.push(p.images.length === 1 ? 'Your image is ready.' : `${p.images.length} images are ready.`);
    else if (p.status === 'CANCELLED') parts.push('Cancelled; its credits were returned.');
    else if (p.totalSteps && p.status !== 'FAILED') parts.push(`Step ${p.step ?? 0} of ${p.totalSteps}`);
    if (p.status === 'QUEUED' && p.queuePosition) parts.push(`#${p.queuePosition} in the queue`);
    if (p.etaSeconds !== null && p.etaSeconds !== undefined && !TERMINAL.has(p.status)) parts.push(`about ${Math.max(1, Math.round(p.etaSeconds))} s left`);
    if (p.error) parts.push(p.error.message);
    detail.textContent = parts.join(' · ');
    if (p.preview) {
      preview.src = p.preview;
      preview.hidden = false;
    }
    if (p.status === 'SUCCEEDED') {
      preview.hidden = true;
      results.replaceChildren(...p.images.map((image, i) => h('a', { href: image.url, target: '_blank', rel: 'noopener' }, placeholderImage(image, image.url, `Image ${i + 1}`))));
    }
  };

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    formError.textContent = '';
    const [width, height] = size.value.split('x').map(Number) as [number, number];
    const abort = new AbortController();
    current = { id: null, abort };
    go.disabled = true;
    cancel.hidden = false;
    results.replaceChildren();
    preview.hidden = true;
    statusLine.textContent = 'Sending…';
    detail.textContent = '';
    fill.style.width = '0%';
    sdk
      .generate(
        { prompt: prompt.value, negativePrompt: negative.value, width, height, steps: Number(steps.value), batchSize: Number(batch.value), seed: Number(seed.value) },
        {
          signal: abort.signal,
          preview: true,
          onProgress: (p) => {
            if (current && current.id === null) {
              current.id = p.generationId;
              void refreshCredits();
              void loadRecent(true);
            }
            show(p);
          },
        },
      )
      .catch((err: unknown) => {
        if (err instanceof SdJobsError && err.generation) show(err.generation);
        else if (abort.signal.aborted) statusLine.textContent = 'Cancelled';
        else formError.textContent = messageOf(err);
      })
      .finally(() => {
        current = null;
        go.disabled = false;
        cancel.hidden = true;
        void refreshCredits();
        void loadRecent(true);
      });
  });
  cancel.addEventListener('click', () => {
    if (!current) return;
    // Before its first event its id is not known yet: the abort cancels it as soon as it is.
    if (current.id === null) return current.abort.abort();
    // Otherwise the stream reports CANCELLED, with the credits back.
    void sdk.cancel(current.id).catch((err: unknown) => (formError.textContent = messageOf(err)));
  });

  app.replaceChildren(
    header(me, () => void signOut()),
    h(
      'main',
      { class: 'signed-in' },
      h('div', { class: 'column' }, form, live),
      h('aside', { class: 'card' }, h('h2', {}, 'Recent'), list, more),
      me.emailVerified ? null : h('p', { class: 'notice' }, 'Confirm your address with the link we mailed you to start generating.'),
    ),
  );
  await loadRecent(true);
}

async function start(): Promise<void> {
  if (!localStorage.getItem(TOKEN_KEY) && window.__SDJOBS__?.token && !sessionStorage.getItem(SIGNED_OUT_KEY)) localStorage.setItem(TOKEN_KEY, window.__SDJOBS__.token);
  if (!localStorage.getItem(TOKEN_KEY)) return renderSignedOut();
  try {
    const { me } = await client().request<{ me: Me | null }, Record<string, never>>(ME);
    if (!me) throw new SdJobsError('UNAUTHENTICATED', 'Signed out.');
    await renderSignedIn(me);
  } catch (err) {
    localStorage.removeItem(TOKEN_KEY);
    renderSignedOut(err instanceof SdJobsError && err.code === 'UNAUTHENTICATED' ? 'Your session ended; sign in again.' : messageOf(err));
  }
}

void start();
