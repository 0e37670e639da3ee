// Markdown for chat answers: `marked` renders it with raw HTML escaped (shown as text, never
// parsed), and DOMPurify sanitizes the result (no scripts, event handlers, styles or javascript: URLs)
// before it reaches the page.

import DOMPurify from 'dompurify';
import { Marked } from 'marked';

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    // raw HTML in the model's answer is text, not markup
    html({ text }) {
      return escapeHtml(text);
    },
  },
});

let hooked = false;

function purifier(): typeof DOMPurify {
  if (!hooked) {
    DOMPurify.addHook('afterSanitizeAttributes', (node) => {
      if (node.tagName === 'A') {
        node.setAttribute('target', '_blank');
        node.setAttribute('rel', 'noopener noreferrer nofollow');
      }
    });
    hooked = true;
  }
  return DOMPurify;
}

/** Sanitized HTML for `text` (markdown). */
export function renderMarkdown(text: string): string {
  if (!DOMPurify.isSupported) return `<p>${escapeHtml(text)}</p>`; // no DOM to sanitize with: text only
  const html = marked.parse(text, { async: false });
  return purifier().sanitize(html, {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'object', 'embed', 'img'],
    FORBID_ATTR: ['style', 'class', 'id'],
    ADD_ATTR: ['target'],
  });
}
