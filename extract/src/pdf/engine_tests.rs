//! The text engine's mechanisms, each on a PDF the test writes itself.

use lopdf::{dictionary, Dictionary, Document, Object, Stream};
use serde_json::Value;

use crate::Limits;

fn helvetica() -> Dictionary {
    dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica" }
}

/// A one-page PDF of `content`; `page` entries are added to the page
/// dictionary; `setup` adds objects and returns the `/Font` and `/XObject`
/// resources.
fn pdf_with(
    content: &str,
    page: Dictionary,
    setup: impl FnOnce(&mut Document) -> (Dictionary, Dictionary),
) -> Value {
    let mut doc = Document::with_version("1.7");
    let pages_id = doc.new_object_id();
    let (fonts, xobjects) = setup(&mut doc);
    let resources = dictionary! { "Font" => fonts, "XObject" => xobjects };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.as_bytes().to_vec()));
    let mut page_dict = dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id, "Resources" => resources,
        "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
    };
    for (k, v) in page.iter() {
        page_dict.set(k.clone(), v.clone());
    }
    let page_id = doc.add_object(page_dict);
    doc.objects.insert(
        pages_id,
        Object::Dictionary(
            dictionary! { "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1 },
        ),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("t.pdf");
    doc.save(&path).expect("write pdf");
    super::extract(&path, &Limits::default(), &mut |_, _, _| {}).expect("extract")
}

fn text_of(v: &Value) -> String {
    v["pages"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn with_font(doc: &mut Document, font: Dictionary) -> (Dictionary, Dictionary) {
    let id = doc.add_object(font);
    (dictionary! { "F1" => id }, Dictionary::new())
}

fn simple(content: &str) -> String {
    text_of(&pdf_with(content, Dictionary::new(), |doc| {
        with_font(doc, helvetica())
    }))
}

#[test]
fn tj_kerning_gaps_are_spaces_and_small_kerns_are_not() {
    let t = simple("BT /F1 12 Tf 72 700 Td [(The)-250(quick)-250(br)-30(o)-20(wn)] TJ ET");
    assert_eq!(t, "The quick brown");
}

#[test]
fn glyph_by_glyph_positioning_keeps_words_and_spaces() {
    // Each glyph placed with its own Td, as OCR layers and some exporters do.
    let t = simple(
        "BT /F1 10 Tf 100 700 Td (a) Tj 5.56 0 Td (b) Tj 5.56 0 Td (c) Tj 8.4 0 Td (d) Tj 5.56 0 Td (e) Tj ET",
    );
    assert_eq!(t, "abc de");
}

#[test]
fn lines_on_one_baseline_stay_one_line_and_hyphens_join() {
    let t = simple(
        "BT /F1 12 Tf 72 700 Td (2004) Tj (-) Tj (08 exam-) Tj 0 -14 Td (ple) Tj ET \
         BT /F1 12 Tf 72 600 Td (next) Tj ET",
    );
    assert_eq!(t, "2004-08 example\n\nnext");
}

#[test]
fn type0_identity_font_with_tounicode_bfrange_and_widths() {
    let cmap = b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap
1 begincodespacerange <0000> <FFFF> endcodespacerange
1 beginbfrange <0001> <0002> <4E2D> endbfrange
1 beginbfchar <0003> <00660069> endbfchar
endcmap end end";
    let v = pdf_with(
        "BT /F1 12 Tf 72 700 Td <0001000200030003> Tj ET",
        Dictionary::new(),
        |doc| {
            let tu = doc.add_object(Stream::new(dictionary! {}, cmap.to_vec()));
            let cid = doc.add_object(dictionary! {
                "Type" => "Font", "Subtype" => "CIDFontType2", "BaseFont" => "Test",
                "DW" => 1000, "W" => vec![3.into(), vec![Object::Integer(500)].into()],
            });
            let font = dictionary! {
                "Type" => "Font", "Subtype" => "Type0", "BaseFont" => "Test",
                "Encoding" => "Identity-H", "DescendantFonts" => vec![cid.into()], "ToUnicode" => tu,
            };
            with_font(doc, font)
        },
    );
    assert_eq!(text_of(&v), "中丮fifi");
    // Two 12 pt glyphs of 1 em and two of 0.5 em (split into f and i).
    let bbox = &v["pages"][0]["blocks"][0]["lines"][0]["bbox"];
    assert_eq!(bbox[0], 72.0);
    assert_eq!(bbox[2], 72.0 + 12.0 * 3.0);
}

#[test]
fn differences_with_glyph_names() {
    let v = pdf_with(
        "BT /F1 12 Tf 72 700 Td (ABCDE) Tj ET",
        Dictionary::new(),
        |doc| {
            let mut f = helvetica();
            f.set(
            "Encoding",
            dictionary! {
                "Type" => "Encoding", "BaseEncoding" => "WinAnsiEncoding",
                "Differences" => vec![66.into(), "alpha".into(), "uni4E2D".into(), "f_i".into(), "bullet".into()],
            },
        );
            with_font(doc, f)
        },
    );
    assert_eq!(text_of(&v), "Aα中fi•");
}

#[test]
fn invisible_text_of_ocr_layers_is_extracted() {
    assert_eq!(
        simple("BT 3 Tr /F1 12 Tf 72 700 Td (scanned words) Tj ET"),
        "scanned words"
    );
}

#[test]
fn fake_bold_overprint_is_dropped() {
    assert_eq!(
        simple("BT /F1 12 Tf 72 700 Td (Bold) Tj ET BT /F1 12 Tf 72.3 700 Td (Bold) Tj ET"),
        "Bold"
    );
}

#[test]
fn rotated_page_is_read_upright_with_boxes_in_displayed_space() {
    // /Rotate 90 with text drawn going up the page: upright when displayed.
    let v = pdf_with(
        "BT /F1 12 Tf 0 1 -1 0 300 100 Tm (landscape text) Tj ET",
        dictionary! { "Rotate" => 90 },
        |doc| with_font(doc, helvetica()),
    );
    let page = &v["pages"][0];
    assert_eq!(text_of(&v), "landscape text");
    assert_eq!(
        (page["width"].clone(), page["height"].clone()),
        (792.0.into(), 612.0.into())
    );
    let bbox = &page["blocks"][0]["lines"][0]["bbox"];
    // Displayed: x runs along the page's y (from 100), y from the left edge (300).
    assert_eq!(bbox[0], 100.0);
    assert!(
        bbox[3].as_f64().is_some_and(|y| (y - 302.4).abs() < 0.01),
        "{bbox}"
    );
}

#[test]
fn form_xobjects_are_drawn_with_their_matrix() {
    let v = pdf_with("q 1 0 0 1 100 0 cm /X1 Do Q", Dictionary::new(), |doc| {
        let font = doc.add_object(helvetica());
        let form = Stream::new(
            dictionary! {
                "Type" => "XObject", "Subtype" => "Form",
                "BBox" => vec![0.into(), 0.into(), 500.into(), 500.into()],
                "Matrix" => vec![1.into(), 0.into(), 0.into(), 1.into(), 0.into(), 50.into()],
                "Resources" => dictionary! { "Font" => dictionary! { "F9" => font } },
            },
            b"BT /F9 10 Tf 10 600 Td (inside the form) Tj ET".to_vec(),
        );
        let form = doc.add_object(form);
        (Dictionary::new(), dictionary! { "X1" => form })
    });
    assert_eq!(text_of(&v), "inside the form");
    let bbox = &v["pages"][0]["blocks"][0]["lines"][0]["bbox"];
    // x = 100 + 10; baseline y = 792 - (600 + 50) = 142, the box 0.8 em above, 0.2 below.
    assert_eq!(bbox[0], 110.0);
    assert_eq!(
        (bbox[1].clone(), bbox[3].clone()),
        (134.0.into(), 144.0.into())
    );
}

#[test]
fn damaged_content_keeps_what_was_read() {
    assert_eq!(
        simple("BT /F1 12 Tf 72 700 Td (kept) Tj ET BT ) ( <zz> Tj"),
        "kept"
    );
}

/// A page with a label, four field widgets and an `/AcroForm` with
/// `/NeedAppearances need`: a text field and a signature whose stored
/// appearances say "stale" and "signed", a list box and a check box
/// that is off (no appearances).
fn form_pdf(need: bool) -> Value {
    let mut doc = Document::with_version("1.7");
    let pages_id = doc.new_object_id();
    let font = doc.add_object(helvetica());
    let mut stored = |text: &str| {
        let resources = dictionary! { "Font" => dictionary! { "F1" => font } };
        let bbox: Vec<Object> = vec![0.into(), 0.into(), 100.into(), 20.into()];
        doc.add_object(Stream::new(
            dictionary! { "Type" => "XObject", "Subtype" => "Form", "BBox" => bbox, "Resources" => resources },
            format!("BT /F1 10 Tf 2 4 Td ({text}) Tj ET").into_bytes(),
        ))
    };
    let (stale, signed) = (stored("stale"), stored("signed"));
    let rect = |x: i64, y: i64, w: i64, h: i64| -> Vec<Object> {
        vec![x.into(), y.into(), (x + w).into(), (y + h).into()]
    };
    let s = Object::string_literal;
    let widgets = [
        dictionary! { "FT" => "Tx", "T" => s("name"), "V" => s("Alice Smith"), "DA" => s("/Helv 12 Tf 0 g"),
        "Rect" => rect(106, 695, 150, 20), "AP" => dictionary! { "N" => stale } },
        dictionary! { "FT" => "Ch", "T" => s("pick"), "DA" => s("/Helv 10 Tf 0 g"), "Rect" => rect(72, 600, 100, 40),
        "Opt" => vec![s("Red"), vec![s("g"), s("Green")].into()] },
        dictionary! { "FT" => "Btn", "T" => s("agree"), "AS" => "Off", "DA" => s("/ZaDb 0 Tf 0 g"),
        "MK" => dictionary! { "CA" => s("4") }, "Rect" => rect(72, 560, 12, 12) },
        dictionary! { "FT" => "Sig", "T" => s("sig"), "Rect" => rect(72, 500, 100, 20),
        "AP" => dictionary! { "N" => signed } },
    ];
    let annots: Vec<Object> = widgets
        .into_iter()
        .map(|mut w| {
            w.set("Type", "Annot");
            w.set("Subtype", "Widget");
            doc.add_object(w).into()
        })
        .collect();
    let content = doc.add_object(Stream::new(
        dictionary! {},
        b"BT /F1 12 Tf 72 700 Td (Name:) Tj ET".to_vec(),
    ));
    let page = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content,
        "Resources" => dictionary! { "Font" => dictionary! { "F1" => font } },
        "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()], "Annots" => annots.clone(),
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(
            dictionary! { "Type" => "Pages", "Kids" => vec![page.into()], "Count" => 1 },
        ),
    );
    let form = dictionary! { "Fields" => annots, "NeedAppearances" => need,
    "DR" => dictionary! { "Font" => dictionary! { "Helv" => font } } };
    let catalog = doc
        .add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id, "AcroForm" => form });
    doc.trailer.set("Root", catalog);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("form.pdf");
    doc.save(&path).expect("write pdf");
    super::extract(&path, &Limits::default(), &mut |_, _, _| {}).expect("extract")
}

#[test]
fn form_fields_are_drawn_from_their_values_when_the_form_asks() {
    let t = text_of(&form_pdf(true));
    assert_eq!(t, "Name: Alice Smith\n\nRed\nGreen\n\nsigned");
    // Without the flag the stored appearances stand; a widget without
    // one (the list box) is still drawn from its field.
    let t = text_of(&form_pdf(false));
    assert_eq!(t, "Name: stale\n\nRed\nGreen\n\nsigned");
}
