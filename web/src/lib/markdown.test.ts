// @vitest-environment jsdom
import { describe, expect, it } from 'vitest';
import { renderMarkdown } from './markdown';

describe('renderMarkdown', () => {
  it('renders markdown and code blocks', () => {
    const html = renderMarkdown('# Title\n\n**bold** and `x`\n\n```python\nprint("<b>")\n```\n\n- a\n- b');
    expect(html).toContain('<h1>Title</h1>');
    expect(html).toContain('<strong>bold</strong>');
    expect(html).toContain('<code>x</code>');
    expect(html).toMatch(/<pre><code[^>]*>print\(&quot;&lt;b&gt;&quot;\)|<pre><code[^>]*>print\("&lt;b&gt;"\)/);
    expect(html).toContain('<li>a</li>');
  });

  it('shows raw HTML as text, never as markup', () => {
    const html = renderMarkdown('hi <script>alert(1)</script> <img src=x onerror=alert(1)>\n\n<div onclick="x()">block</div>');
    const box = document.createElement('div');
    box.innerHTML = html;
    expect(box.querySelectorAll('script, img, div').length).toBe(0);
    const attrs = [...box.querySelectorAll('*')].flatMap((el) => el.getAttributeNames());
    expect(attrs.filter((a) => a.startsWith('on'))).toEqual([]);
    expect(box.textContent).toContain('<script>alert(1)</script>');
  });

  it('keeps safe attributes such as link titles', () => {
    const html = renderMarkdown('[x](https://a.example "t")');
    expect(html).toContain('title="t"');
  });

  it('drops javascript: links and opens the rest in a new tab without a referrer', () => {
    const html = renderMarkdown('[bad](javascript:alert(1)) [good](https://example.com)');
    expect(html).not.toContain('javascript:');
    expect(html).toContain('href="https://example.com"');
    expect(html).toContain('rel="noopener noreferrer nofollow"');
  });
});
